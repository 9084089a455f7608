{{/* One image for every part; the webhook injects the image it runs itself, so this retags the injected containers too. */}}
{{- define "edgemesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
