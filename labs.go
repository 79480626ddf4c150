// Package k8slab holds the files that ship inside the binary.
package k8slab

import _ "embed"

// ReferenceLab is the user's GNS3 lab, the default for `k8slab lab`.
//
//go:embed testdata/labs/gns3-reference.yaml
var ReferenceLab []byte
