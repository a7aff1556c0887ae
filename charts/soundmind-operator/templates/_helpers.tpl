{{/* The release's full name: the release name, or release-chart when the release name does not say it. */}}
{{- define "soundmind-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "soundmind-operator.selectorLabels" -}}
app.kubernetes.io/name: soundmind-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "soundmind-operator.labels" -}}
{{ include "soundmind-operator.selectorLabels" . }}
app.kubernetes.io/part-of: soundmind
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "soundmind-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "soundmind-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name the existing ServiceAccount to run as (serviceAccount.create is false)" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "soundmind-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}
