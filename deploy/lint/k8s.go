package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	podutil "k8s.io/kubernetes/pkg/api/pod"
	serviceutil "k8s.io/kubernetes/pkg/api/service"
	"k8s.io/kubernetes/pkg/apis/apps"
	_ "k8s.io/kubernetes/pkg/apis/apps/install"
	appsvalidation "k8s.io/kubernetes/pkg/apis/apps/validation"
	"k8s.io/kubernetes/pkg/apis/core"
	_ "k8s.io/kubernetes/pkg/apis/core/install"
	corevalidation "k8s.io/kubernetes/pkg/apis/core/validation"
	"k8s.io/kubernetes/pkg/apis/networking"
	_ "k8s.io/kubernetes/pkg/apis/networking/install"
	networkingvalidation "k8s.io/kubernetes/pkg/apis/networking/validation"
	"k8s.io/kubernetes/pkg/apis/policy"
	_ "k8s.io/kubernetes/pkg/apis/policy/install"
	policyvalidation "k8s.io/kubernetes/pkg/apis/policy/validation"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// manifest is one decoded Kubernetes object and where it came from.
type manifest struct {
	where string // file#document
	obj   runtime.Object
}

// namespace is the one the API server would fill in for `kubectl apply -n`;
// the manifests name none, so they go wherever they are applied.
const namespace = "tokend"

// lintKubernetes checks every YAML document under dir/k8s.
func lintKubernetes(r *report, dir string) {
	files, err := filepath.Glob(filepath.Join(dir, "k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		r.addf(filepath.Join(dir, "k8s"), "no *.yaml manifests (%v)", err)
		return
	}
	// Strict: an unknown field, a duplicate key or a wrong type is an
	// error, where kubectl apply would warn or the API server drop it.
	decoder := serializer.NewCodecFactory(legacyscheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var all []manifest
	for _, file := range files {
		all = append(all, decodeFile(r, decoder, file)...)
	}
	names := map[string]string{}
	for _, m := range all {
		gvk := m.obj.GetObjectKind().GroupVersionKind()
		acc, _ := meta.Accessor(m.obj)
		key := gvk.Kind + "/" + acc.GetName()
		if prev, ok := names[key]; ok {
			r.addf(m.where, "%s is also defined at %s", key, prev)
		}
		names[key] = m.where
		validateWithAPIServer(r, m)
		checkPodSecurity(r, m)
	}
	checkReferences(r, all)
}

// decodeFile decodes every non-empty document of file.
func decodeFile(r *report, decoder runtime.Decoder, file string) []manifest {
	f, err := os.Open(file)
	if err != nil {
		r.addf(file, "%v", err)
		return nil
	}
	defer f.Close()
	var out []manifest
	rd := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for doc := 1; ; doc++ {
		data, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		where := fmt.Sprintf("%s#%d", file, doc)
		if err != nil {
			r.addf(where, "%v", err)
			return out
		}
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			r.addf(where, "%v", err)
			continue
		}
		if s := string(bytes.TrimSpace(j)); s == "null" || s == "" {
			continue // only comments
		}
		obj, gvk, err := decoder.Decode(data, nil, nil)
		if err != nil {
			r.addf(where, "%v", err)
			continue
		}
		acc, err := meta.Accessor(obj)
		if err != nil {
			r.addf(where, "%s: %v", gvk, err)
			continue
		}
		out = append(out, manifest{where: fmt.Sprintf("%s (%s %s)", where, gvk.Kind, acc.GetName()), obj: obj})
	}
}

// validateWithAPIServer defaults the object, converts it to the internal
// version and runs the validation the API server runs on create.
func validateWithAPIServer(r *report, m manifest) {
	obj := m.obj.DeepCopyObject()
	gvk := obj.GetObjectKind().GroupVersionKind()
	acc, _ := meta.Accessor(obj)
	if acc.GetNamespace() == "" {
		acc.SetNamespace(namespace)
	}
	legacyscheme.Scheme.Default(obj)
	internal, err := legacyscheme.Scheme.ConvertToVersion(obj, schema.GroupVersion{Group: gvk.Group, Version: runtime.APIVersionInternal})
	if err != nil {
		r.addf(m.where, "convert to the internal version: %v", err)
		return
	}
	var errs field.ErrorList
	var warnings []string
	switch o := internal.(type) {
	case *apps.Deployment:
		errs = appsvalidation.ValidateDeployment(o, podutil.GetValidationOptionsFromPodTemplate(&o.Spec.Template, nil))
		warnings = podutil.GetWarningsForPodTemplate(context.Background(), field.NewPath("spec", "template"), &o.Spec.Template, nil)
	case *apps.StatefulSet:
		errs = appsvalidation.ValidateStatefulSet(o, appsvalidation.StatefulSetValidationOptions{},
			podutil.GetValidationOptionsFromPodTemplate(&o.Spec.Template, nil))
		warnings = podutil.GetWarningsForPodTemplate(context.Background(), field.NewPath("spec", "template"), &o.Spec.Template, nil)
	case *core.Service:
		// What the Service REST storage does before it validates
		// (normalizeClusterIPs); IP allocation is a cluster's business.
		if o.Spec.ClusterIP != "" && len(o.Spec.ClusterIPs) == 0 {
			o.Spec.ClusterIPs = []string{o.Spec.ClusterIP}
		}
		errs = corevalidation.ValidateServiceCreate(o)
		warnings = serviceutil.GetWarningsForService(o, nil)
	case *core.ConfigMap:
		errs = corevalidation.ValidateConfigMap(o)
	case *core.ServiceAccount:
		errs = corevalidation.ValidateServiceAccount(o)
	case *policy.PodDisruptionBudget:
		errs = policyvalidation.ValidatePodDisruptionBudget(o, policyvalidation.PodDisruptionBudgetValidationOptions{})
	case *networking.NetworkPolicy:
		errs = networkingvalidation.ValidateNetworkPolicy(o, networkingvalidation.NetworkPolicyValidationOptions{})
	default:
		r.addf(m.where, "lint does not validate kind %s yet: add it to deploy/lint/k8s.go", gvk.Kind)
	}
	for _, e := range errs {
		r.addf(m.where, "API server validation: %v", e)
	}
	for _, w := range warnings {
		r.addf(m.where, "API server warning: %s", w)
	}
}

// checkPodSecurity evaluates every pod template against the Pod Security
// Standards "restricted" profile, as a namespace labelled
// pod-security.kubernetes.io/enforce=restricted would.
func checkPodSecurity(r *report, m manifest) {
	tmpl := podTemplate(m.obj)
	if tmpl == nil {
		return
	}
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		r.addf(m.where, "pod security evaluator: %v", err)
		return
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for _, res := range eval.EvaluatePod(lv, &tmpl.ObjectMeta, &tmpl.Spec) {
		if !res.Allowed {
			r.addf(m.where, "Pod Security Standards (restricted): %s: %s", res.ForbiddenReason, res.ForbiddenDetail)
		}
	}
}

func podTemplate(obj runtime.Object) *corev1.PodTemplateSpec {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template
	case *appsv1.StatefulSet:
		return &o.Spec.Template
	case *appsv1.DaemonSet:
		return &o.Spec.Template
	}
	return nil
}

// workload is a Deployment or StatefulSet, for the cross-reference checks.
type workload struct {
	manifest
	name     string
	replicas int32
	selector *metav1.LabelSelector
	tmpl     *corev1.PodTemplateSpec
	claims   []string // volumeClaimTemplates
}

// checkReferences checks what no validator follows from one object to
// another, and the house rules of these manifests.
func checkReferences(r *report, all []manifest) {
	var workloads []workload
	services := map[string]*corev1.Service{}
	configMaps := map[string]*corev1.ConfigMap{}
	var policies []manifest
	for _, m := range all {
		switch o := m.obj.(type) {
		case *networkingv1.NetworkPolicy:
			policies = append(policies, m)
		case *appsv1.Deployment:
			workloads = append(workloads, workload{m, o.Name, ptrOr(o.Spec.Replicas, 1), o.Spec.Selector, &o.Spec.Template, nil})
		case *appsv1.StatefulSet:
			var claims []string
			for _, c := range o.Spec.VolumeClaimTemplates {
				claims = append(claims, c.Name)
			}
			workloads = append(workloads, workload{m, o.Name, ptrOr(o.Spec.Replicas, 1), o.Spec.Selector, &o.Spec.Template, claims})
		case *corev1.Service:
			services[o.Name] = o
		case *corev1.ConfigMap:
			configMaps[o.Name] = o
		}
	}
	for _, w := range workloads {
		checkWorkload(r, w, configMaps)
	}
	for _, m := range all {
		switch o := m.obj.(type) {
		case *corev1.Service:
			checkService(r, m, o, workloads)
		case *policyv1.PodDisruptionBudget:
			checkPDB(r, m, o, workloads)
		case *appsv1.StatefulSet:
			svc := services[o.Spec.ServiceName]
			if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
				r.addf(m.where, "serviceName %q is not a headless Service (clusterIP: None) in these manifests", o.Spec.ServiceName)
			}
		}
	}
	checkNATS(r, workloads, services, configMaps, policies)
}

func ptrOr(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// checkWorkload: the selector selects the template's pods; every container
// has resource requests and limits, a non-root read-only security context
// and probes on ports it declares; volumes and ConfigMaps exist.
func checkWorkload(r *report, w workload, configMaps map[string]*corev1.ConfigMap) {
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil || sel.Empty() {
		r.addf(w.where, "selector %v: %v (an empty selector selects every pod)", w.selector, err)
	} else if !sel.Matches(labels.Set(w.tmpl.Labels)) {
		r.addf(w.where, "selector %s does not match the template's labels %v", sel, w.tmpl.Labels)
	}
	spec := &w.tmpl.Spec
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		r.addf(w.where, "pod securityContext.runAsNonRoot must be true")
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
		if v.ConfigMap != nil && configMaps[v.ConfigMap.Name] == nil && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional) {
			r.addf(w.where, "volume %s: ConfigMap %q is not in these manifests", v.Name, v.ConfigMap.Name)
		}
	}
	for _, c := range spec.Containers {
		where := fmt.Sprintf("%s container %s", w.where, c.Name)
		ports := map[string]int32{}
		for _, p := range c.Ports {
			if p.Name != "" {
				ports[p.Name] = p.ContainerPort
			}
			ports[strconv.Itoa(int(p.ContainerPort))] = p.ContainerPort
		}
		for _, pr := range []struct {
			name  string
			probe *corev1.Probe
		}{{"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}, {"startupProbe", c.StartupProbe}} {
			if pr.probe == nil {
				if pr.name != "startupProbe" {
					r.addf(where, "no %s", pr.name)
				}
				continue
			}
			var port *intstr.IntOrString
			switch {
			case pr.probe.HTTPGet != nil:
				port = &pr.probe.HTTPGet.Port
			case pr.probe.TCPSocket != nil:
				port = &pr.probe.TCPSocket.Port
			case pr.probe.GRPC != nil:
				p := intstr.FromInt32(pr.probe.GRPC.Port)
				port = &p
			}
			if port != nil {
				if _, ok := ports[port.String()]; !ok {
					r.addf(where, "%s port %s is not one of the container's ports", pr.name, port)
				}
			}
		}
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[res]; !ok {
				r.addf(where, "no %s request", res)
			}
			if _, ok := c.Resources.Limits[res]; !ok {
				r.addf(where, "no %s limit", res)
			}
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			r.addf(where, "securityContext.readOnlyRootFilesystem must be true")
		}
		if sc != nil && sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
			r.addf(where, "securityContext.runAsNonRoot is false")
		}
		if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image[strings.LastIndex(c.Image, "/")+1:], ":") {
			r.addf(where, "image %q: name a tag other than latest", c.Image)
		}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok && !slices.Contains(w.claims, vm.Name) {
				r.addf(where, "volumeMount %s: no such volume or volumeClaimTemplate", vm.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				ref := e.ValueFrom.ConfigMapKeyRef
				if cm := configMaps[ref.Name]; cm == nil {
					r.addf(where, "env %s: ConfigMap %q is not in these manifests", e.Name, ref.Name)
				} else if _, ok := cm.Data[ref.Key]; !ok {
					r.addf(where, "env %s: ConfigMap %q has no key %q", e.Name, ref.Name, ref.Key)
				}
			}
			if e.Name == "ENCRYPTION_KEY" && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
				r.addf(where, "env ENCRYPTION_KEY must come from a Secret (secretKeyRef), never a value in a manifest")
			}
		}
	}
}

// checkService: the selector selects some workload's pods, and every
// targetPort is a port of their containers.
func checkService(r *report, m manifest, svc *corev1.Service, workloads []workload) {
	if len(svc.Spec.Selector) == 0 {
		r.addf(m.where, "no selector")
		return
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var target *workload
	for i := range workloads {
		if sel.Matches(labels.Set(workloads[i].tmpl.Labels)) {
			target = &workloads[i]
		}
	}
	if target == nil {
		r.addf(m.where, "selector %s selects no pod template in these manifests", sel)
		return
	}
	ports := map[string]bool{}
	for _, c := range target.tmpl.Spec.Containers {
		for _, p := range c.Ports {
			ports[p.Name] = p.Name != ""
			ports[strconv.Itoa(int(p.ContainerPort))] = true
		}
	}
	for _, p := range svc.Spec.Ports {
		tp := p.TargetPort
		if tp.Type == intstr.Int && tp.IntVal == 0 {
			tp = intstr.FromInt32(p.Port) // the default targetPort
		}
		if !ports[tp.String()] {
			r.addf(m.where, "port %s: targetPort %s is not a container port of %s", p.Name, tp.String(), target.name)
		}
	}
}

// checkPDB: the selector selects a workload, and the budget lets one pod
// go (a budget that allows no eviction blocks every node drain).
func checkPDB(r *report, m manifest, pdb *policyv1.PodDisruptionBudget, workloads []workload) {
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || sel.Empty() {
		r.addf(m.where, "selector %v: %v", pdb.Spec.Selector, err)
		return
	}
	for _, w := range workloads {
		if !sel.Matches(labels.Set(w.tmpl.Labels)) {
			continue
		}
		if mv := pdb.Spec.MinAvailable; mv != nil && mv.Type == intstr.Int && mv.IntVal >= w.replicas {
			r.addf(m.where, "minAvailable %d of %d replicas of %s: no pod can ever be evicted", mv.IntVal, w.replicas, w.name)
		}
		if mu := pdb.Spec.MaxUnavailable; mu != nil && mu.Type == intstr.Int && mu.IntVal < 1 {
			r.addf(m.where, "maxUnavailable %d: no pod can ever be evicted", mu.IntVal)
		}
		return
	}
	r.addf(m.where, "selector %s selects no pod template in these manifests", sel)
}

// checkNATS: the StatefulSet whose pods run nats-server mounts a ConfigMap
// whose configuration nats-server accepts, clusters every pod with
// JetStream on its volume, and every tokend's NATS_URL lists every pod.
func checkNATS(r *report, workloads []workload, services map[string]*corev1.Service, configMaps map[string]*corev1.ConfigMap, policies []manifest) {
	var nats *workload
	var ss *appsv1.StatefulSet
	for i, w := range workloads {
		if s, ok := w.obj.(*appsv1.StatefulSet); ok && len(s.Spec.Template.Spec.Containers) > 0 &&
			strings.HasPrefix(s.Spec.Template.Spec.Containers[0].Image, "nats:") {
			nats, ss = &workloads[i], s
		}
	}
	if nats == nil {
		r.addf("k8s", "no StatefulSet runs the nats image")
		return
	}
	c := ss.Spec.Template.Spec.Containers[0]
	var conf, confWhere, confDir string
	for _, v := range ss.Spec.Template.Spec.Volumes {
		if v.ConfigMap == nil || configMaps[v.ConfigMap.Name] == nil {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name != v.Name {
				continue
			}
			for i, a := range c.Args {
				if (a == "--config" || a == "-c") && i+1 < len(c.Args) && filepath.Dir(c.Args[i+1]) == filepath.Clean(vm.MountPath) {
					key := filepath.Base(c.Args[i+1])
					conf, confWhere = configMaps[v.ConfigMap.Name].Data[key], "ConfigMap "+v.ConfigMap.Name+" key "+key
					confDir = filepath.Dir(c.Args[i+1])
				}
			}
		}
	}
	if conf == "" {
		r.addf(nats.where, "the nats container's --config is not a key of a ConfigMap it mounts")
		return
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	var pods []string
	for i := range ptrOr(ss.Spec.Replicas, 1) {
		pods = append(pods, fmt.Sprintf("%s-%d.%s", ss.Name, i, ss.Spec.ServiceName))
	}
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = ss.Name + "-0"
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			// The only values a NATS configuration takes from a Secret
			// are users' public nkeys: stand a fresh one in.
			pub, err := newPublicUserKey()
			if err != nil {
				r.addf(nats.where, "nkey for %s: %v", e.Name, err)
			}
			env[e.Name] = pub
		default:
			env[e.Name] = e.Value
		}
	}
	var mounts []string
	for _, vm := range c.VolumeMounts {
		if slices.Contains(nats.claims, vm.Name) {
			mounts = append(mounts, vm.MountPath)
		}
	}
	checkNATSConfig(r, nats.where+" "+confWhere, conf, env, natsExpect{
		confDir:    confDir,
		routeHosts: pods, clusterPort: ports["cluster"], clientPort: ports["client"], monitorPort: natsMonitorPort, storeMounts: mounts,
		secretMounts: secretMounts(nats.tmpl, c),
	})
	var tokend *workload
	for i, w := range workloads {
		for _, c := range w.tmpl.Spec.Containers {
			var vars map[string]string
			for _, e := range c.Env {
				if e.Name == "NATS_URL" {
					checkNATSURL(r, fmt.Sprintf("%s container %s", w.where, c.Name), e.Value, pods, ports["client"])
					vars = map[string]string{}
				}
			}
			if vars == nil {
				continue
			}
			tokend = &workloads[i]
			for _, e := range c.Env {
				vars[e.Name] = e.Value
			}
			checkNATSClient(r, fmt.Sprintf("%s container %s", w.where, c.Name), vars, secretMounts(w.tmpl, c))
		}
	}
	for _, svc := range services {
		if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(nats.tmpl.Labels)) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.Port == natsMonitorPort || p.TargetPort.IntVal == natsMonitorPort || p.TargetPort.StrVal == "monitor" {
				r.addf("Service "+svc.Name, "port %s exposes NATS monitoring (%d), which is not authenticated", p.Name, natsMonitorPort)
			}
		}
	}
	checkNetworkPolicies(r, policies, nats, tokend, ports)
}

// natsMonitorPort is where the NATS configurations serve monitoring, on
// loopback.
const natsMonitorPort = 8222

func newPublicUserKey() (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", err
	}
	return kp.PublicKey()
}

// secretMounts returns where the container mounts Secret volumes.
func secretMounts(tmpl *corev1.PodTemplateSpec, c corev1.Container) []string {
	secrets := map[string]bool{}
	for _, v := range tmpl.Spec.Volumes {
		if v.Secret != nil {
			secrets[v.Name] = true
		}
	}
	var out []string
	for _, vm := range c.VolumeMounts {
		if secrets[vm.Name] {
			out = append(out, vm.MountPath)
		}
	}
	return out
}

// checkNATSClient: tokend authenticates to NATS (NATS_NKEY_SEED or
// NATS_CREDS) and verifies the servers (NATS_CA_FILE), from files on
// mounted Secrets.
func checkNATSClient(r *report, where string, env map[string]string, secretMounts []string) {
	if env["NATS_NKEY_SEED"] == "" && env["NATS_CREDS"] == "" {
		r.addf(where, "NATS_URL without NATS_NKEY_SEED or NATS_CREDS: tokend would connect to NATS without credentials")
	}
	if env["NATS_CA_FILE"] == "" {
		r.addf(where, "NATS_URL without NATS_CA_FILE: tokend would not verify the servers' certificates")
	}
	for _, name := range []string{"NATS_NKEY_SEED", "NATS_CREDS", "NATS_CA_FILE", "NATS_CERT_FILE", "NATS_KEY_FILE"} {
		if f := env[name]; f != "" && !slices.ContainsFunc(secretMounts, func(d string) bool { return underDir(f, d) }) {
			r.addf(where, "%s=%s is not on a mounted Secret (%q)", name, f, secretMounts)
		}
	}
}

// checkNetworkPolicies: a NetworkPolicy selects the NATS pods and admits
// only the client port from tokend (and labelled pods) and the route port
// from NATS pods; another selects tokend's pods.
func checkNetworkPolicies(r *report, policies []manifest, nats, tokend *workload, natsPorts map[string]int32) {
	portNumber := func(p *intstr.IntOrString) int32 {
		if p == nil {
			return 0
		}
		if p.Type == intstr.String {
			return natsPorts[p.StrVal]
		}
		return p.IntVal
	}
	selects := func(sel *metav1.LabelSelector, w *workload) bool {
		s, err := metav1.LabelSelectorAsSelector(sel)
		return err == nil && s.Matches(labels.Set(w.tmpl.Labels))
	}
	var natsPolicy, tokendPolicy bool
	for _, m := range policies {
		np := m.obj.(*networkingv1.NetworkPolicy)
		if tokend != nil && selects(&np.Spec.PodSelector, tokend) {
			tokendPolicy = true
		}
		if !selects(&np.Spec.PodSelector, nats) {
			continue
		}
		if len(np.Spec.PolicyTypes) > 0 && !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			continue
		}
		natsPolicy = true
		for i, rule := range np.Spec.Ingress {
			where := fmt.Sprintf("%s ingress[%d]", m.where, i)
			if len(rule.From) == 0 {
				r.addf(where, "admits every source: name the pods")
			}
			if len(rule.Ports) == 0 {
				r.addf(where, "admits every port of the NATS pods: name the client or cluster port")
			}
			for _, p := range rule.Ports {
				switch portNumber(p.Port) {
				case natsPorts["client"]:
					tokendIn := false
					for _, peer := range rule.From {
						if peer.IPBlock != nil {
							r.addf(where, "the client port admits an ipBlock: admit pods by label")
						}
						if peer.PodSelector != nil && peer.NamespaceSelector == nil && tokend != nil && selects(peer.PodSelector, tokend) {
							tokendIn = true
						}
						if peer.PodSelector == nil || len(peer.PodSelector.MatchLabels)+len(peer.PodSelector.MatchExpressions) == 0 {
							r.addf(where, "the client port admits every pod of a namespace: admit pods by label")
						}
					}
					if !tokendIn {
						r.addf(where, "the client port does not admit tokend's pods")
					}
				case natsPorts["cluster"]:
					for _, peer := range rule.From {
						if peer.IPBlock != nil || peer.NamespaceSelector != nil || peer.PodSelector == nil || !selects(peer.PodSelector, nats) {
							r.addf(where, "the route port admits more than the NATS pods")
						}
					}
				case natsMonitorPort:
					r.addf(where, "admits the monitoring port %d", natsMonitorPort)
				default:
					r.addf(where, "admits port %s, which is neither the client nor the cluster port", p.Port)
				}
			}
		}
	}
	if !natsPolicy {
		r.addf("k8s", "no NetworkPolicy selects the NATS pods for ingress: every pod of the cluster reaches their ports")
	}
	if tokend != nil && !tokendPolicy {
		r.addf("k8s", "no NetworkPolicy selects tokend's pods")
	}
}

// checkNATSURL: the comma-separated URLs name every host once, on port.
func checkNATSURL(r *report, where, value string, hosts []string, port int32) {
	var got []string
	for _, s := range strings.Split(value, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Scheme != "nats" || u.Port() != strconv.Itoa(int(port)) {
			r.addf(where, "NATS_URL %q: want nats://HOST:%d, comma-separated", s, port)
			continue
		}
		got = append(got, u.Hostname())
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(hosts))
	if !slices.Equal(got, want) {
		r.addf(where, "NATS_URL names %q, want every NATS server %q", got, want)
	}
}
