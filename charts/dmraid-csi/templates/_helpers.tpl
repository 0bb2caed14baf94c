{{- define "dmraid-csi.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "dmraid-csi.labels" -}}
app.kubernetes.io/name: dmraid-csi
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "dmraid-csi.pullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}

{{/* "true" when the upstream image of sidecar .name runs (sidecars.enabled
and sidecars.<name>.enabled); empty when the driver does its work itself. */}}
{{- define "dmraid-csi.upstream" -}}
{{- $s := index .root.Values.sidecars .name -}}
{{- if and .root.Values.sidecars.enabled $s.enabled -}}true{{- end -}}
{{- end -}}
