package kube

import (
	"slices"
	"testing"
)

func TestSplitDocs(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"a: 1\n", []string{"a: 1\n"}},
		{"---\na: 1\n---\nb: 2\n", []string{"", "a: 1\n", "b: 2\n"}},
		{"a: 1\n--- \nb: 2", []string{"a: 1\n", "b: 2"}},
		{"a: '---'\n----\n", []string{"a: '---'\n----\n"}},
		{"a: 1\n---", []string{"a: 1\n"}},
	}
	for _, c := range cases {
		if got := SplitDocs(c.in); !slices.Equal(got, c.want) {
			t.Errorf("SplitDocs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
