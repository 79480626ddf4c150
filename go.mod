module github.com/k8slab/k8slab

go 1.26.8

require (
	github.com/kevinburke/ssh_config v1.6.0
	github.com/pkg/sftp v1.13.12
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
	sigs.k8s.io/yaml v1.6.0
)

require (
	github.com/kr/fs v0.1.0 // indirect
	go.yaml.in/yaml/v2 v2.4.2 // indirect
)
