{{/* Object names: the release name, or "<release>-dbgrant" when it does not contain the chart name. */}}
{{- define "dbgrant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dbgrant.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "dbgrant.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "dbgrant.serviceAccountName" -}}
{{- default (include "dbgrant.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "dbgrant.leaseName" -}}
{{- default (printf "%s-leader" (include "dbgrant.fullname" .)) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "dbgrant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dbgrant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dbgrant.labels" -}}
{{ include "dbgrant.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: dbgrant
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}
