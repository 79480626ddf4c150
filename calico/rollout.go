package calico

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NodeReport is one node's Calico and readiness state.
type NodeReport struct {
	Node    string `json:"node"`
	Ready   bool   `json:"ready"`
	Calico  string `json:"calico"` // Running, or why not
	Problem string `json:"problem,omitempty"`
}

// Rollout reports calico-node per node and node readiness; done is true
// when every node is Ready with calico-node running.
func Rollout(ctx context.Context, kube kubernetes.Interface) (reports []NodeReport, desired int32, done bool, err error) {
	ds, err := kube.AppsV1().DaemonSets("kube-system").Get(ctx, "calico-node", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, 0, false, fmt.Errorf("DaemonSet kube-system/calico-node does not exist")
	}
	if err != nil {
		return nil, 0, false, err
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, 0, false, err
	}
	pods, err := kube.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=calico-node"})
	if err != nil {
		return nil, 0, false, err
	}
	byNode := map[string]string{}
	for _, p := range pods.Items {
		state := string(p.Status.Phase)
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" {
				state = w.Reason + " " + cs.Image
				break
			}
		}
		byNode[p.Spec.NodeName] = state
	}
	done = true
	for _, n := range nodes.Items {
		r := NodeReport{Node: n.Name, Calico: byNode[n.Name]}
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" {
				r.Ready = cond.Status == "True"
				if !r.Ready {
					r.Problem = strings.TrimSpace(cond.Reason + ": " + cond.Message)
				}
			}
		}
		if r.Calico == "" {
			r.Calico = "no calico-node pod"
		}
		done = done && r.Ready && r.Calico == "Running"
		reports = append(reports, r)
	}
	sort.Slice(reports, func(i, j int) bool { return reports[i].Node < reports[j].Node })
	return reports, ds.Status.DesiredNumberScheduled, done, nil
}
