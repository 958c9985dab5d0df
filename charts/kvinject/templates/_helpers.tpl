{{/* The chart name, or nameOverride. */}}
{{- define "kvinject.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of every namespaced object and of the cluster-scoped ones (ClusterRole, webhook
configurations): fullnameOverride, else the release name when it already contains the chart
name, else "<release>-<chart>". Truncated to 63 characters, the limit of a DNS label, since it
is also the Service name.
*/}}
{{- define "kvinject.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "kvinject.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "kvinject.labels" -}}
helm.sh/chart: {{ include "kvinject.chart" . }}
{{ include "kvinject.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select kvinject's pods; never change them on upgrade (selectors are immutable). */}}
{{- define "kvinject.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kvinject.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The Secret holding the serving certificate, in every certificate mode. */}}
{{- define "kvinject.tlsSecretName" -}}
{{- printf "%s-tls" (include "kvinject.fullname" .) }}
{{- end }}

{{/* The cert-manager Certificate whose CA the webhook configurations trust. */}}
{{- define "kvinject.servingCertificateName" -}}
{{- printf "%s-serving" (include "kvinject.fullname" .) }}
{{- end }}

{{/*
The certificate mode, checked by every template that depends on it: an unknown mode, or provided
mode without its three PEMs, fails the render with a message naming the values to set.
*/}}
{{- define "kvinject.certificateMode" -}}
{{- $mode := .Values.certificates.mode }}
{{- if not (has $mode (list "selfManaged" "certManager" "provided")) }}
{{- fail (printf "certificates.mode must be selfManaged, certManager or provided, not %q" $mode) }}
{{- end }}
{{- if eq $mode "provided" }}
{{- $missing := list }}
{{- range $key := list "tlsCrt" "tlsKey" "caBundle" }}
{{- if not (index $.Values.certificates.provided $key) }}
{{- $missing = append $missing (printf "certificates.provided.%s" $key) }}
{{- end }}
{{- end }}
{{- if $missing }}
{{- fail (printf "certificates.mode=provided needs the PEM values %s (e.g. helm install --set-file %s=FILE)" (join ", " $missing) (first $missing)) }}
{{- end }}
{{- end }}
{{- $mode }}
{{- end }}

{{/*
Annotations of both webhook configurations: in certManager mode, cert-manager's CA injector
copies the serving Certificate's CA into every caBundle.
*/}}
{{- define "kvinject.webhookAnnotations" -}}
{{- if eq (include "kvinject.certificateMode" .) "certManager" -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "kvinject.servingCertificateName" .) }}
{{- end }}
{{- end }}

{{/*
clientConfig of a webhook, given (dict "root" $ "path" "/mutate"). caBundle is rendered only in
provided mode: cert-manager injects it, and in selfManaged mode kvinject patches it in itself.
Leaving the field out (rather than empty) lets an upgrade keep the value they wrote.
*/}}
{{- define "kvinject.clientConfig" -}}
{{- $root := .root -}}
clientConfig:
  service:
    name: {{ include "kvinject.fullname" $root }}
    namespace: {{ $root.Release.Namespace }}
    path: {{ .path }}
    port: 443
  {{- if eq (include "kvinject.certificateMode" $root) "provided" }}
  caBundle: {{ include "kvinject.providedPem" (dict "root" $root "key" "caBundle" "marker" "CERTIFICATE") | b64enc }}
  {{- end }}
{{- end }}

{{/*
The namespaces every webhook sees: opted in by label, and never kube-system, kube-node-lease or
kvinject's own namespace (a webhook that intercepts the pods it runs in could never restart; the
system namespaces must keep working whatever their labels say). kubernetes.io/metadata.name is
set by the API server on every namespace and cannot be changed.
*/}}
{{- define "kvinject.namespaceSelector" -}}
namespaceSelector:
  matchLabels:
    kvinject.io/injection: enabled
  matchExpressions:
    {{- include "kvinject.notSystemNamespace" . | nindent 4 }}
{{- end }}

{{/*
Every namespace but the system ones and kvinject's own: the identity policy must hold wherever
a pod can claim a binding, not only in opted-in namespaces.
*/}}
{{- define "kvinject.everyNamespaceSelector" -}}
namespaceSelector:
  matchExpressions:
    {{- include "kvinject.notSystemNamespace" . | nindent 4 }}
{{- end }}

{{- define "kvinject.notSystemNamespace" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values:
    - kube-system
    - kube-node-lease
    - {{ .Release.Namespace }}
{{- end }}

{{/*
A PEM from certificates.provided, given (dict "root" $ "key" "tlsCrt" "marker" "CERTIFICATE"):
fails the render with the value's name when it is not a PEM of that kind (kvinject.certificateMode
has already failed when it is missing).
*/}}
{{- define "kvinject.providedPem" -}}
{{- $value := index .root.Values.certificates.provided .key }}
{{- if not (regexMatch (printf "-----BEGIN [A-Z ]*%s-----" .marker) $value) }}
{{- fail (printf "certificates.provided.%s is not a PEM %s block" .key .marker) }}
{{- end }}
{{- $value }}
{{- end }}

{{/*
"true" when kvinject looks for pods running without injection: uninjectedPods.enabled, or
uninjectedPods.evict, which implies it. Empty otherwise.
*/}}
{{- define "kvinject.uninjectedPods" -}}
{{- if or .Values.uninjectedPods.enabled .Values.uninjectedPods.evict }}true{{ end }}
{{- end }}
