package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/opencontainers/go-digest"
)

// tokendPort is the port the image serves on (PORT, and the manifests).
const tokendPort = "50051"

// lintDockerfile parses dir/Dockerfile and runs BuildKit's lint rules on
// it (docker build --check), then checks what the image must be:
// non-root, a static binary on distroless/static or scratch (or one
// linked against Debian 12's glibc on distroless/base-debian12), the port
// exposed, an exec-form entrypoint.
func lintDockerfile(ctx context.Context, r *report, dir string) {
	file := filepath.Join(dir, "Dockerfile")
	dt, err := os.ReadFile(file)
	if err != nil {
		r.addf(file, "%v", err)
		return
	}
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		r.addf(file, "parse: %v", err)
		return
	}
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil {
			line = w.Location.Start.Line
		}
		r.addf(fmt.Sprintf("%s:%d", file, line), "parser: %s", w.Short)
	}

	src := llb.Local("dockerfile")
	def, err := src.Marshal(ctx)
	if err != nil {
		r.addf(file, "source definition: %v", err)
		return
	}
	smap := llb.NewSourceMap(&src, file, "Dockerfile", dt)
	smap.Definition = def
	results, err := dockerfile2llb.DockerfileLint(ctx, dt, dockerfile2llb.ConvertOpt{
		SourceMap:    smap,
		MetaResolver: offlineImages{},
	})
	if err != nil {
		r.addf(file, "lint: %v", err)
		return
	}
	for _, w := range results.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].GetStart().GetLine())
		}
		r.addf(fmt.Sprintf("%s:%d", file, line), "BuildKit lint %s: %s (%s)", w.RuleName, w.Detail, w.URL)
	}
	if results.Error != nil {
		r.addf(file, "BuildKit: %s", results.Error.Message)
	}

	stages, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		r.addf(file, "instructions: %v", err)
		return
	}
	if len(stages) < 2 {
		r.addf(file, "want a multi-stage build (a build stage and a runtime stage), got %d stages", len(stages))
		return
	}
	final := stages[len(stages)-1]
	// distroless/base has glibc (and OpenSSL's libcrypto): a binary linked
	// against the build stage's glibc runs there; static and scratch need
	// a static binary.
	dynamicOK := strings.HasPrefix(final.BaseName, "gcr.io/distroless/base")
	if !dynamicOK && !strings.HasPrefix(final.BaseName, "gcr.io/distroless/static") && final.BaseName != "scratch" {
		r.addf(file, "runtime stage FROM %s: want gcr.io/distroless/base..., gcr.io/distroless/static... or scratch", final.BaseName)
	}
	if dynamicOK && !strings.Contains(final.BaseName, "debian12") {
		r.addf(file, "runtime stage FROM %s: want Debian 12's, the glibc the golang:...-bookworm build stage links against", final.BaseName)
	}
	var user string
	var exposed []string
	entrypoint := false
	for _, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.ExposeCommand:
			for _, p := range c.Ports {
				exposed = append(exposed, strings.TrimSuffix(p, "/tcp"))
			}
		case *instructions.EntrypointCommand:
			entrypoint = !c.PrependShell
			if c.PrependShell {
				r.addf(file, "ENTRYPOINT in shell form: the runtime image has no shell")
			}
		}
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		r.addf(file, "runtime stage runs as %q: want a non-root USER", user)
	}
	if !slices.Contains(exposed, tokendPort) {
		r.addf(file, "runtime stage does not EXPOSE %s", tokendPort)
	}
	if !entrypoint {
		r.addf(file, "runtime stage has no exec-form ENTRYPOINT")
	}
	builds, static := 0, 0
	for _, st := range stages[:len(stages)-1] {
		for _, cmd := range st.Commands {
			run, ok := cmd.(*instructions.RunCommand)
			if !ok {
				continue
			}
			// Each command of a RUN (split on ";": the branches of an if)
			// that runs go build must build a static binary: no cgo, or
			// cgo linked with -extldflags=-static (the BoringCrypto build).
			for _, part := range strings.Split(strings.Join(run.CmdLine, " "), ";") {
				if !strings.Contains(part, "go build") {
					continue
				}
				builds++
				if strings.Contains(part, "CGO_ENABLED=0") || strings.Contains(part, "-extldflags=-static") {
					static++
				}
			}
		}
	}
	if builds == 0 || (!dynamicOK && static != builds) {
		r.addf(file, "a build stage runs go build neither with CGO_ENABLED=0 nor linked with -extldflags=-static: the binary would not run on a static base")
	}
}

// offlineImages answers BuildKit's base-image look-ups without a registry:
// every image is taken to exist, for linux on this machine's architecture,
// with only PATH in its environment. Rules that depend on a base image's
// real configuration (its other ENV, its platform) are therefore not
// checked here.
type offlineImages struct{}

func (offlineImages) ResolveImageConfig(_ context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	platform := map[string]string{"os": "linux", "architecture": "amd64"}
	if opt.ImageOpt != nil && opt.ImageOpt.Platform != nil {
		platform = map[string]string{"os": opt.ImageOpt.Platform.OS, "architecture": opt.ImageOpt.Platform.Architecture}
	}
	cfg, err := json.Marshal(map[string]any{
		"os": platform["os"], "architecture": platform["architecture"],
		"config": map[string]any{"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{}},
	})
	if err != nil {
		return "", "", nil, err
	}
	return ref, digest.FromBytes(cfg), cfg, nil
}
