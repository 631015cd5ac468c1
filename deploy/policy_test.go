package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/auth-platform/tokenservice/rpc/auth"
)

// TestShippedCallerPolicies: the AUTH_POLICY_FILE that the compose file
// and the Kubernetes manifests ship is one tokend loads: whole (it ends
// with auth.EndMarker) and valid.
func TestShippedCallerPolicies(t *testing.T) {
	t.Parallel()
	policies := map[string]string{}
	var compose struct {
		Configs map[string]struct {
			Content string `yaml:"content"`
		} `yaml:"configs"`
	}
	data, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	policies["compose.yaml tokend_callers"] = compose.Configs["tokend_callers"].Content
	data, err = os.ReadFile("k8s/tokend.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p, ok := doc.Data["policy.yaml"]; ok && doc.Kind == "ConfigMap" {
			policies["k8s/tokend.yaml policy.yaml"] = p
		}
	}
	if len(policies) != 2 {
		t.Fatalf("found %d shipped policies, want 2: %v", len(policies), policies)
	}
	for where, p := range policies {
		if _, err := auth.ParsePolicy([]byte(p)); err != nil {
			t.Errorf("%s: %v", where, err)
		}
	}
}
