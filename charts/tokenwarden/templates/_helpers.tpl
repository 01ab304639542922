{{/* The chart name, or nameOverride. */}}
{{- define "tokenwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else the release name when it contains the chart
name, else <release>-<chart>. Truncated so that "<prefix>-controller-metrics" fits in 63 characters.
*/}}
{{- define "tokenwarden.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tokenwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component. Call with (dict "ctx" $ "component" "issuer"). */}}
{{- define "tokenwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenwarden.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of every object of one component. Call with (dict "ctx" $ "component" "issuer"). */}}
{{- define "tokenwarden.labels" -}}
{{ include "tokenwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: tokenwarden
helm.sh/chart: {{ include "tokenwarden.chart" .ctx }}
{{- end }}

{{/* Labels of one component's pods: no helm.sh/chart, so that a chart upgrade alone rolls no pods. */}}
{{- define "tokenwarden.podLabels" -}}
{{ include "tokenwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: tokenwarden
{{- end }}

{{/* The ServiceAccount name of one component. Call with (dict "ctx" $ "component" "issuer"). */}}
{{- define "tokenwarden.serviceAccountName" -}}
{{- $sa := (index .ctx.Values .component).serviceAccount }}
{{- if $sa.create }}
{{- default (printf "%s-%s" (include "tokenwarden.fullname" .ctx) .component) $sa.name }}
{{- else }}
{{- required (printf "%s.serviceAccount.name is required when %s.serviceAccount.create is false" .component .component) $sa.name }}
{{- end }}
{{- end }}

{{- define "tokenwarden.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The issuer's URL: externalURL, else the issuer Service's in-cluster address. */}}
{{- define "tokenwarden.externalURL" -}}
{{- if .Values.externalURL }}
{{- .Values.externalURL }}
{{- else }}
{{- $host := printf "%s-issuer.%s.svc" (include "tokenwarden.fullname" .) .Release.Namespace }}
{{- $scheme := ternary "https" "http" .Values.issuer.tls.enabled }}
{{- $port := int .Values.issuer.service.port }}
{{- if eq $port (ternary 443 80 .Values.issuer.tls.enabled) }}
{{- printf "%s://%s" $scheme $host }}
{{- else }}
{{- printf "%s://%s:%d" $scheme $host $port }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of the issuer's endpoints port: https, or http without TLS. */}}
{{- define "tokenwarden.issuerPort" -}}
{{- ternary "https" "http" .Values.issuer.tls.enabled }}
{{- end }}

{{/* The Secret the issuer serves TLS from: issuer.tls.secretName, else the generated one. */}}
{{- define "tokenwarden.tlsSecretName" -}}
{{- default (printf "%s-issuer-tls" (include "tokenwarden.fullname" .)) .Values.issuer.tls.secretName }}
{{- end }}

{{/* The Secret of the issuer replicas' peer key, which the controller keeps and the issuer reads. */}}
{{- define "tokenwarden.peerSecretName" -}}
{{- printf "%s-issuer-peer" (include "tokenwarden.fullname" .) }}
{{- end }}

{{/* Where the TLS certificate comes from: secret, certManager or selfSigned; "" without TLS. */}}
{{- define "tokenwarden.tlsSource" -}}
{{- if .Values.issuer.tls.enabled }}
{{- if .Values.issuer.tls.secretName }}secret
{{- else if .Values.issuer.tls.certManager.issuerRef.name }}certManager
{{- else }}selfSigned
{{- end }}
{{- end }}
{{- end }}

{{/* The names of a generated certificate, comma-separated: the Service's, externalURL's host, extraHosts. */}}
{{- define "tokenwarden.tlsHosts" -}}
{{- $svc := printf "%s-issuer" (include "tokenwarden.fullname" .) }}
{{- $hosts := list (printf "%s.%s.svc" $svc .Release.Namespace) $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) }}
{{- $external := (urlParse (include "tokenwarden.externalURL" .)).hostname }}
{{- $hosts = append $hosts $external }}
{{- $hosts = concat $hosts .Values.issuer.tls.extraHosts }}
{{- $hosts | uniq | join "," }}
{{- end }}

{{/*
The scheduling part of one component's pod spec: nodeSelector, tolerations, affinity (default: prefer
other nodes than the component's other replicas), topology spread (default: spread over zones and nodes
when possible). Call with (dict "ctx" $ "component" "issuer").
*/}}
{{- define "tokenwarden.scheduling" -}}
{{- $v := index .ctx.Values .component }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
affinity:
{{- if $v.affinity }}
  {{- toYaml $v.affinity | nindent 2 }}
{{- else }}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "tokenwarden.selectorLabels" . | nindent 12 }}
{{- end }}
topologySpreadConstraints:
{{- if $v.topologySpreadConstraints }}
  {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
{{- else }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "tokenwarden.selectorLabels" . | nindent 6 }}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "tokenwarden.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
