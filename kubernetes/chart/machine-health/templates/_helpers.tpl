{{/* Names ----------------------------------------------------------------------------------- */}}

{{- define "mh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mh.fullname" -}}
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

{{- define "mh.apiName" -}}{{ include "mh.fullname" . | trunc 59 | trimSuffix "-" }}-api{{- end }}
{{- define "mh.uiName" -}}{{ include "mh.fullname" . | trunc 60 | trimSuffix "-" }}-ui{{- end }}
{{- define "mh.mlflowName" -}}{{ include "mh.fullname" . | trunc 56 | trimSuffix "-" }}-mlflow{{- end }}
{{- define "mh.toolboxName" -}}{{ include "mh.fullname" . | trunc 55 | trimSuffix "-" }}-toolbox{{- end }}
{{- define "mh.configName" -}}{{ include "mh.fullname" . | trunc 56 | trimSuffix "-" }}-config{{- end }}
{{- define "mh.pipelineConfigName" -}}{{ include "mh.fullname" . | trunc 54 | trimSuffix "-" }}-pipeline{{- end }}

{{- define "mh.pipelineServiceAccountName" -}}
{{- default (printf "%s-pipeline" (include "mh.fullname" . | trunc 54 | trimSuffix "-")) .Values.pipeline.serviceAccount.name }}
{{- end }}

{{- define "mh.workspaceClaimName" -}}
{{- default (printf "%s-workspace" (include "mh.fullname" . | trunc 53 | trimSuffix "-")) .Values.pipeline.workspace.existingClaim }}
{{- end }}

{{- define "mh.secretName" -}}
{{- default (printf "%s-secrets" (include "mh.fullname" . | trunc 55 | trimSuffix "-")) .Values.secrets.existingSecret }}
{{- end }}

{{/* Labels: every object carries the common set; selectors add a component, so the API, UI,
     MLflow and pipeline selectors never match each other's pods. ---------------------------- */}}

{{- define "mh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: machine-health
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Usage: include "mh.componentSelector" (dict "ctx" $ "component" "api") */}}
{{- define "mh.componentSelector" -}}
{{ include "mh.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mh.componentLabels" -}}
{{ include "mh.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Images: a tag is always required (the schema refuses "latest"); a digest pins harder. ----- */}}
{{- define "mh.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{/* MLflow tracking URI: explicit value, else the chart's own server, else a clear failure. --- */}}
{{- define "mh.mlflowTrackingUri" -}}
{{- if .Values.config.mlflowTrackingUri }}
{{- .Values.config.mlflowTrackingUri }}
{{- else if .Values.mlflow.enabled }}
{{- printf "http://%s:%d" (include "mh.mlflowName" .) (int .Values.mlflow.port) }}
{{- else }}
{{- fail "config.mlflowTrackingUri is required when mlflow.enabled=false (e.g. https://dagshub.com/<user>/<repo>.mlflow)" }}
{{- end }}
{{- end }}

{{/* Secret env vars. Keys are the variable names, so an existing Secret is documented by the
     same list (see values.yaml). Optional keys are marked optional: a missing MLflow login is
     a valid setup (in-cluster MLflow), a missing JWT key is not. ----------------------------- */}}
{{- define "mh.secretEnv" -}}
{{- $secret := include "mh.secretName" .ctx -}}
{{- range .required }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
{{- end }}
{{- range .optional }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end }}

{{/* Downward API: the replica name in GET /version and the namespace the reload step searches. */}}
{{- define "mh.podEnv" -}}
- name: MH_REPLICA_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: MH_KUBERNETES_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{- define "mh.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "mh.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* Annotation that rolls the pods when the ConfigMap (or a chart-managed Secret) changes. */}}
{{- define "mh.configChecksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/* The API pods' label selector as a string, for the reload step's list calls. */}}
{{- define "mh.apiSelectorString" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s,app.kubernetes.io/component=api" (include "mh.name" .) .Release.Name }}
{{- end }}
