{{/* The chart's name, or nameOverride. */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of the release's namespaced objects: fullnameOverride, or the release name
(with the chart's name added unless the release name already contains it). */}}
{{- define "switchyard.fullname" -}}
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

{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "switchyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchyard
{{- end }}

{{- define "switchyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchyard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchyard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "switchyard.leaseName" -}}
{{- default (include "switchyard.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* PromQL label matchers selecting this release's series. */}}
{{- define "switchyard.metricSelector" -}}
{{- if .Values.prometheusRule.metricSelector }}
{{- .Values.prometheusRule.metricSelector }}
{{- else }}
{{- printf "job=%q, namespace=%q" (include "switchyard.fullname" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* The username of the operator's ServiceAccount, as admission policies see it. */}}
{{- define "switchyard.operatorUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "switchyard.serviceAccountName" .) }}
{{- end }}

{{/* Fits an object of files/policies/ to this release, in place (renders nothing). The
files name the defaults of `switchyard run` and of this chart: the Lease `switchyard`
and the ServiceAccount switchyard-system/switchyard. This writes the release's instead:
- the leader-election ClusterRole's Lease rule with resourceNames names the release's
  Lease (leaderElection.leaseName);
- a ValidatingAdmissionPolicy's match condition named `switchyard-operator` (the
  policies that bind the operator only; see src/policies/operator.rs) compares the
  requester with the release's ServiceAccount, as `switchyard::policies::operator::
  for_operator` does (tests/helm.rs checks that the two agree).
Argument: (list $ $object). */}}
{{- define "switchyard.fitToRelease" -}}
{{- $root := index . 0 }}
{{- $object := index . 1 }}
{{- if and (eq $object.kind "ClusterRole") (eq $object.metadata.name "switchyard-leader-election") }}
{{- range $rule := $object.rules }}
{{- if and (has "leases" $rule.resources) $rule.resourceNames }}
{{- $_ := set $rule "resourceNames" (list (include "switchyard.leaseName" $root)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $object.kind "ValidatingAdmissionPolicy" }}
{{- range $condition := ($object.spec.matchConditions | default list) }}
{{- if eq $condition.name "switchyard-operator" }}
{{- $_ := set $condition "expression" (printf "request.userInfo.username == '%s'" (include "switchyard.operatorUsername" $root)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Renders a multi-document YAML file from files/ with the chart's labels added to each
object and the object fitted to the release (switchyard.fitToRelease), failing on a
document that does not parse. Argument: (list $ "files/x.yaml"). */}}
{{- define "switchyard.renderFile" -}}
{{- $root := index . 0 }}
{{- $path := index . 1 }}
{{- $labels := include "switchyard.labels" $root | fromYaml }}
{{- range $document := regexSplit "(?m)^---[ \\t]*$" ($root.Files.Get $path) -1 }}
{{- $object := fromYaml $document }}
{{- if hasKey $object "Error" }}
{{- fail (printf "%s: %s" $path $object.Error) }}
{{- end }}
{{- if $object }}
{{- $_ := set $object.metadata "labels" (merge (dict) ($object.metadata.labels | default dict) $labels) }}
{{- $_ := include "switchyard.fitToRelease" (list $root $object) }}
---
{{ toYaml $object }}
{{- end }}
{{- end }}
{{- end }}
