{{/*
Named templates. Other charts that depend on this one add remedy to their own pods with
`.Subcharts.remedy` as the context (Helm 3.7+):

  spec:
    terminationGracePeriodSeconds: {{ include "remedy.terminationGracePeriodSeconds" .Subcharts.remedy }}
    initContainers:
      {{- include "remedy.initContainers" .Subcharts.remedy | nindent 6 }}
    containers:
      {{- include "remedy.containers" .Subcharts.remedy | nindent 6 }}
      - name: connector
        env:
          {{- include "remedy.connectorEnv" .Subcharts.remedy | nindent 10 }}
        volumeMounts:
          {{- include "remedy.connectorVolumeMounts" .Subcharts.remedy | nindent 10 }}
    volumes:
      {{- include "remedy.volumes" .Subcharts.remedy | nindent 6 }}
*/}}

{{- define "remedy.fullname" -}}
{{- printf "%s-remedy" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{- define "remedy.selectorLabels" -}}
app.kubernetes.io/name: remedy
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "remedy.labels" -}}
{{ include "remedy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Label that marks pods carrying the sidecar; the PodMonitor selects on it. */}}
{{- define "remedy.podLabels" -}}
remedy.io/sidecar: {{ .Release.Name | quote }}
{{- end }}

{{/* remedy.yaml, rendered from the values. */}}
{{- define "remedy.config" -}}
proxy:
  listen: 127.0.0.1:{{ .Values.sidecar.proxyPort }}
  {{- toYaml .Values.proxyLimits | nindent 2 }}
  {{- with .Values.intercept }}
  {{- if .enabled }}
  intercept:
    enabled: true
    ca_dir: {{ .mountPath }}
    {{- if .caSecret }}
    ca_cert_file: /etc/remedy-ca/tls.crt
    ca_key_file: /etc/remedy-ca/tls.key
    {{- end }}
    {{- with .tunnel }}
    tunnel:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  {{- end }}
  {{- end }}
admin:
  listen: 0.0.0.0:{{ .Values.sidecar.adminPort }}
sources:
  {{- toYaml .Values.sources | nindent 2 }}
{{- with .Values.catalog }}
catalog:
  {{- toYaml . | nindent 2 }}
{{- end }}
alerts:
  {{- toYaml .Values.alerts | nindent 2 }}
metrics:
  {{- toYaml .Values.metrics | nindent 2 }}
{{- if .Values.runtime.worker_threads }}
runtime:
  worker_threads: {{ .Values.runtime.worker_threads }}
{{- end }}
{{- if .Values.reload.watch_interval }}
reload:
  watch_interval: {{ .Values.reload.watch_interval }}
{{- end }}
shutdown:
  drain_timeout: {{ .Values.shutdown.drain_timeout }}
  linger: {{ include "remedy.linger" . }}
{{- end }}

{{/* A duration of the form 30s, 5m or 1h, in seconds. */}}
{{- define "remedy.seconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "h" $d }}{{ mul (trimSuffix "h" $d | atoi) 3600 }}
{{- else if hasSuffix "m" $d }}{{ mul (trimSuffix "m" $d | atoi) 60 }}
{{- else }}{{ trimSuffix "s" $d | atoi }}
{{- end }}
{{- end }}

{{/* The longest scrape interval of the enabled monitors, in seconds. */}}
{{- define "remedy.scrapeIntervalSeconds" -}}
{{- $s := 0 -}}
{{- if .Values.podMonitor.enabled }}{{ $s = include "remedy.seconds" .Values.podMonitor.interval | atoi }}{{ end -}}
{{- if .Values.serviceMonitor.enabled }}{{ $s = max $s (include "remedy.seconds" .Values.serviceMonitor.interval | atoi) }}{{ end -}}
{{- if eq $s 0 }}{{ $s = 30 }}{{ end -}}
{{- $s -}}
{{- end }}

{{/*
shutdown.linger: as set, or twice the scrape interval. remedy exits as soon as one scrape
has seen its final counts; linger only bounds the wait, and twice the interval leaves room
for one scrape and one retry.
*/}}
{{- define "remedy.linger" -}}
{{- if .Values.shutdown.linger }}{{ .Values.shutdown.linger }}
{{- else }}{{ mul 2 (include "remedy.scrapeIntervalSeconds" . | atoi) }}s
{{- end }}
{{- end }}

{{/* The pod's grace period: drain, then the wait for the final scrape, then a margin. */}}
{{- define "remedy.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.sidecar.terminationGracePeriodSeconds -}}
{{- add (include "remedy.seconds" .Values.shutdown.drain_timeout | atoi) (include "remedy.seconds" (include "remedy.linger" .) | atoi) 10 -}}
{{- else -}}
{{- .Values.sidecar.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end }}

{{/* Pod annotations: pods roll when remedy.yaml changes. */}}
{{- define "remedy.podAnnotations" -}}
checksum/remedy-config: {{ include "remedy.config" . | sha256sum }}
{{- end }}

{{/* The remedy container. */}}
{{- define "remedy.sidecar" -}}
{{- if and .Values.sidecar.native (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "sidecar.native needs Kubernetes 1.29 or newer (this cluster: %s); set sidecar.native=false for a classic sidecar" .Capabilities.KubeVersion.Version) }}
{{- end }}
- name: remedy
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if .Values.sidecar.native }}
  # A native sidecar: started before, and stopped after, the connector.
  restartPolicy: Always
  {{- end }}
  args: ["--log-format", {{ .Values.sidecar.logFormat | quote }}, "run", "--config", "/etc/remedy/remedy.yaml"]
  env:
    - name: REMEDY_LOG
      value: {{ .Values.sidecar.logLevel | quote }}
  ports:
    - name: remedy-admin
      containerPort: {{ .Values.sidecar.adminPort }}
      protocol: TCP
  readinessProbe:
    httpGet:
      path: /-/ready
      port: remedy-admin
    periodSeconds: 5
  livenessProbe:
    httpGet:
      path: /-/healthy
      port: remedy-admin
    periodSeconds: 10
    failureThreshold: 6
  {{- if .Values.sidecar.native }}
  startupProbe:
    httpGet:
      path: /-/ready
      port: remedy-admin
    periodSeconds: 1
    failureThreshold: 30
  {{- end }}
  resources:
    {{- toYaml .Values.sidecar.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    capabilities:
      drop: [ALL]
    seccompProfile:
      type: RuntimeDefault
  volumeMounts:
    - name: remedy-config
      mountPath: /etc/remedy
      readOnly: true
    {{- if .Values.intercept.enabled }}
    - name: remedy-ca
      mountPath: {{ .Values.intercept.mountPath }}
    {{- if .Values.intercept.caSecret }}
    - name: remedy-ca-key
      mountPath: /etc/remedy-ca
      readOnly: true
    {{- end }}
    {{- end }}
{{- end }}

{{/* The sidecar when native, for a pod's initContainers; nothing otherwise. */}}
{{- define "remedy.initContainers" -}}
{{- if .Values.sidecar.native }}
{{- include "remedy.sidecar" . }}
{{- end }}
{{- end }}

{{/* The sidecar when classic, for a pod's containers; nothing otherwise. */}}
{{- define "remedy.containers" -}}
{{- if not .Values.sidecar.native }}
{{- include "remedy.sidecar" . }}
{{- end }}
{{- end }}

{{/* The config volume; with interception, the CA files' emptyDir (and the user's CA). */}}
{{- define "remedy.volumes" -}}
- name: remedy-config
  configMap:
    name: {{ include "remedy.fullname" . }}
{{- if .Values.intercept.enabled }}
- name: remedy-ca
  emptyDir:
    sizeLimit: 4Mi
{{- with .Values.intercept.caSecret }}
- name: remedy-ca-key
  secret:
    secretName: {{ . }}
    # Readable by remedy's user without an fsGroup; only remedy's container mounts it.
    defaultMode: 0444
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment for the connector container: where remedy listens and, with interception,
HTTPS_PROXY and the CA variables. SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE and
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH replace a client's roots, so they take the bundle (public
roots plus remedy's CA); NODE_EXTRA_CA_CERTS adds to Node's, so it takes the CA alone.
*/}}
{{- define "remedy.connectorEnv" -}}
- name: REMEDY_URL
  value: "http://127.0.0.1:{{ .Values.sidecar.proxyPort }}"
{{- with .Values.intercept }}
{{- if .enabled }}
{{- $proxy := printf "http://127.0.0.1:%v" $.Values.sidecar.proxyPort }}
{{- $noProxy := join "," (concat (list "localhost" "127.0.0.1" "::1" ".svc" ".cluster.local") .noProxy) }}
{{- $bundle := printf "%s/bundle.pem" .mountPath }}
{{- range $name := list "HTTPS_PROXY" "https_proxy" }}
- name: {{ $name }}
  value: {{ $proxy | quote }}
{{- end }}
{{- range $name := list "NO_PROXY" "no_proxy" }}
- name: {{ $name }}
  value: {{ $noProxy | quote }}
{{- end }}
{{- range $name := list "SSL_CERT_FILE" "REQUESTS_CA_BUNDLE" "CURL_CA_BUNDLE" "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH" }}
- name: {{ $name }}
  value: {{ $bundle | quote }}
{{- end }}
- name: NODE_EXTRA_CA_CERTS
  value: {{ printf "%s/ca.pem" .mountPath | quote }}
- name: NODE_USE_ENV_PROXY
  value: "1"
{{- end }}
{{- end }}
{{- end }}

{{/* Volume mounts for the connector container: the CA files, read-only, with interception. */}}
{{- define "remedy.connectorVolumeMounts" -}}
{{- if .Values.intercept.enabled }}
- name: remedy-ca
  mountPath: {{ .Values.intercept.mountPath }}
  readOnly: true
{{- else -}}
[]
{{- end }}
{{- end }}
