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

{{/* Labels of every object the chart renders (manifests/ has the first two). */}}
{{- define "event-router.labels" -}}
{{ include "event-router.selectorLabels" . }}
app.kubernetes.io/part-of: event-router
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "event-router.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
