package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// composeKey is a well-formed ENCRYPTION_KEY for interpolation; the file
// must take the real one from the environment.
const composeKey = "bGludC1vbmx5LWtleS1ub3QtYS1yZWFsLW9uZS0zMmI="

// lintCompose loads dir/compose.yaml as docker compose would (the Compose
// JSON schema, interpolation, consistency checks) and checks the cluster
// it describes.
func lintCompose(ctx context.Context, r *report, dir string) {
	file := filepath.Join(dir, "compose.yaml")
	// The NATS users' public nkeys, which the file must take from the
	// environment too.
	var natsEnv []string
	for _, name := range []string{"TOKEND_NKEY", "SYS_NKEY"} {
		pub, err := newPublicUserKey()
		if err != nil {
			r.addf(file, "nkey: %v", err)
		}
		natsEnv = append(natsEnv, name+"="+pub)
	}

	p, err := loadCompose(ctx, file, append([]string{"ENCRYPTION_KEY=" + composeKey}, natsEnv...))
	if err != nil {
		r.addf(file, "compose: %v", err)
		return
	}
	if _, err := loadCompose(ctx, file, natsEnv); err == nil {
		r.addf(file, "loads without ENCRYPTION_KEY in the environment: require it (${ENCRYPTION_KEY:?...})")
	}

	var nats, tokend []types.ServiceConfig
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		switch {
		case strings.HasPrefix(s.Image, "nats:"):
			nats = append(nats, s)
		case s.Build != nil || strings.HasPrefix(s.Image, "tokend"):
			tokend = append(tokend, s)
		default:
			r.addf(file, "service %s: neither nats nor tokend", name)
		}
	}
	if len(nats) != 3 || len(tokend) != 3 {
		r.addf(file, "%d nats and %d tokend services, want 3 of each", len(nats), len(tokend))
	}
	var natsNames, serverNames []string
	for _, s := range nats {
		natsNames = append(natsNames, s.Name)
	}
	for _, s := range nats {
		where := fmt.Sprintf("%s service %s", file, s.Name)
		if s.HealthCheck == nil || s.HealthCheck.Disable || !strings.Contains(strings.Join(s.HealthCheck.Test, " "), ":8222/healthz") {
			r.addf(where, "want a healthcheck on the monitoring port's /healthz (:8222/healthz)")
		}
		conf, confDir, ok := composeNATSConfig(p, s)
		if !ok {
			r.addf(where, "the --config file is not one of the service's configs")
			continue
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		serverNames = append(serverNames, env["SERVER_NAME"])
		var mounts []string
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeVolume && v.Source != "" {
				mounts = append(mounts, v.Target)
			}
		}
		checkNATSConfig(r, where, conf, env, natsExpect{
			confDir:    confDir,
			routeHosts: natsNames, clientPort: 4222, clusterPort: 6222, monitorPort: natsMonitorPort, storeMounts: mounts,
			secretMounts: composeSecretFiles(s),
		})
		for _, port := range s.Ports {
			r.addf(where, "publishes port %d on the host: the NATS ports stay on the compose network", port.Target)
		}
	}
	slices.Sort(serverNames)
	if len(slices.Compact(slices.Clone(serverNames))) != len(serverNames) {
		r.addf(file, "nats servers share a server name: %q", serverNames)
	}

	published := map[string]string{}
	for _, s := range tokend {
		where := fmt.Sprintf("%s service %s", file, s.Name)
		env := s.Environment
		if v := env["NATS_URL"]; v == nil {
			r.addf(where, "no NATS_URL")
		} else {
			checkNATSURL(r, where, *v, natsNames, 4222)
		}
		if v := env["ENCRYPTION_KEY"]; v == nil || *v != composeKey {
			r.addf(where, "ENCRYPTION_KEY must be ${ENCRYPTION_KEY...} from the environment, the same for every replica")
		}
		if v := env["NATS_REPLICAS"]; v == nil || *v != "3" {
			r.addf(where, "NATS_REPLICAS must be 3")
		}
		vars := map[string]string{}
		for k, v := range env {
			if v != nil {
				vars[k] = *v
			}
		}
		checkNATSClient(r, where, vars, composeSecretFiles(s))
		for _, n := range natsNames {
			if d, ok := s.DependsOn[n]; !ok || d.Condition != types.ServiceConditionHealthy {
				r.addf(where, "depends_on %s: want condition service_healthy", n)
			}
		}
		if !s.ReadOnly {
			r.addf(where, "read_only must be true")
		}
		for _, port := range s.Ports {
			if port.Target != 50051 {
				r.addf(where, "port %d: tokend listens on 50051", port.Target)
			}
			if prev, ok := published[port.Published]; ok {
				r.addf(where, "host port %s is published by %s too", port.Published, prev)
			}
			published[port.Published] = s.Name
		}
		if s.Build != nil {
			ctxDir := s.Build.Context
			if _, err := os.Stat(filepath.Join(ctxDir, "go.mod")); err != nil {
				r.addf(where, "build context %s is not the module root (no go.mod)", ctxDir)
			}
			df := s.Build.Dockerfile
			if !filepath.IsAbs(df) {
				df = filepath.Join(ctxDir, df)
			}
			if _, err := os.Stat(df); err != nil {
				r.addf(where, "build dockerfile: %v", err)
			}
		}
	}
}

// composeSecretFiles returns where the service's secrets are mounted (each
// a file).
func composeSecretFiles(s types.ServiceConfig) []string {
	var out []string
	for _, sec := range s.Secrets {
		t := sec.Target
		if t == "" {
			t = sec.Source
		}
		if !filepath.IsAbs(t) {
			t = "/run/secrets/" + t
		}
		out = append(out, t)
	}
	return out
}

func loadCompose(ctx context.Context, file string, env []string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{file}, cli.WithName("tokend"), cli.WithWorkingDirectory(filepath.Dir(file)), cli.WithEnv(env))
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(ctx)
}

// composeNATSConfig returns the content of the config file the service's
// --config names.
func composeNATSConfig(p *types.Project, s types.ServiceConfig) (content, dir string, ok bool) {
	for i, a := range s.Command {
		if (a != "--config" && a != "-c") || i+1 >= len(s.Command) {
			continue
		}
		for _, c := range s.Configs {
			if c.Target == s.Command[i+1] {
				if cfg, ok := p.Configs[c.Source]; ok && cfg.Content != "" {
					return cfg.Content, filepath.Dir(c.Target), true
				}
			}
		}
	}
	return "", "", false
}
