package calico

import (
	"fmt"
	"strconv"
)

// ServicesEndpointName is the optional ConfigMap every container of the
// release's calico-node DaemonSet takes its environment from
// (envFrom, optional: true), meant to override KUBERNETES_SERVICE_HOST
// and KUBERNETES_SERVICE_PORT.
const ServicesEndpointName = "kubernetes-services-endpoint"

// ConfigMap is the core object, as far as k8slab writes one.
type ConfigMap struct {
	TypeMeta `json:",inline"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Data map[string]string `json:"data"`
}

// ServicesEndpoint points calico-node, its init containers and the CNI
// plugin's kubeconfig (which install-cni writes from the same variables)
// at the API server itself instead of the `kubernetes` Service. Through
// the Service they depend on kube-proxy having programmed it on their
// node: a worker's install-cni failed and waited out the kubelet's 10 s
// back-off because kube-proxy, started at the same moment, had not yet,
// and a kube-proxy that once lost the Service from its nftables map left
// calico-node unable to start at all. The API server is what the
// Service leads to anyway (one control plane, its advertised address).
func ServicesEndpoint(host string, port int) (ConfigMap, error) {
	if host == "" || port <= 0 || port > 65535 {
		return ConfigMap{}, fmt.Errorf("calico: API server endpoint %q port %d is not usable", host, port)
	}
	cm := ConfigMap{TypeMeta: TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		Data: map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": strconv.Itoa(port)}}
	cm.Metadata.Name, cm.Metadata.Namespace = ServicesEndpointName, "kube-system"
	return cm, nil
}
