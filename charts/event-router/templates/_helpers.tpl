{{/* The operator's name: its Deployment, ServiceAccount, ClusterRole(Binding). */}}
{{- define "event-router.fullname" -}}
{{- default "event-router-operator" .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "event-router.serviceAccountName" -}}
{{- default (include "event-router.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Selector labels: the same as manifests/ (a Deployment's selector cannot change). */}}
{{- define "event-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "event-router.fullname" . }}
{{- end -}}

{{/* Helm's own labels, on every object the chart renders. */}}
{{- define "event-router.helmLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Labels of the objects the chart adds or templates itself (the Deployment has the
first two in manifests/ too). The RBAC objects keep manifests/rbac.yaml's labels. */}}
{{- define "event-router.labels" -}}
{{ include "event-router.selectorLabels" . }}
app.kubernetes.io/part-of: event-router
{{ include "event-router.helmLabels" . }}
{{- end -}}

{{- define "event-router.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
