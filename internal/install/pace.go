package install

import "time"

// pace is the pause before the next read of something an install waits
// for (kube-apiserver's /readyz, etcd's health, the rollout): least, or
// four times what the last read took when that is longer. Every read
// goes through the control plane's sshd to the very server being waited
// for, and a slow read means that node is loaded: on the emulated control
// plane, where one read takes seconds, unpaced reads every second would
// add their own load to what they wait out. Paced, they take at most a
// fifth of the wait.
func pace(least, took time.Duration) time.Duration {
	return max(least, 4*took)
}
