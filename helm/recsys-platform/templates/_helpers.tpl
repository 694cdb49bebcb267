{{/* Names and labels. */}}
{{- define "recsys.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "recsys.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "recsys.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recsys.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "recsys.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "recsys.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: recsys-platform
{{- end -}}

{{- define "recsys.serviceAccountName" -}}
{{- if .Values.security.serviceAccount.create -}}
{{- default (include "recsys.fullname" .) .Values.security.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.security.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "recsys.pvcName" -}}
{{- if .Values.storage.pvc.existingClaim -}}
{{- .Values.storage.pvc.existingClaim -}}
{{- else -}}
{{- printf "%s-artifacts" (include "recsys.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Restricted Pod Security: pod level. The Ray images run as uid 1000 (user "ray"). */}}
{{- define "recsys.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 100
fsGroup: 100
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted Pod Security: container level. */}}
{{- define "recsys.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Env shared by every Ray container: writable caches on the emptyDir, credentials by reference. */}}
{{- define "recsys.env" -}}
- name: RECSYS_CONFIG
  value: /etc/recsys/config.yaml
- name: HOME
  value: /tmp/home
- name: XDG_CACHE_HOME
  value: /tmp/home/.cache
- name: TORCH_EXTENSIONS_DIR
  value: /tmp/home/.cache/torch_extensions
- name: OMP_NUM_THREADS
  value: "1"
{{- /* Serve's ingress (config.serve.ingress), as recsys.runtime.serve_env sets it locally. */}}
{{- if ne (default "haproxy" (default (dict) .Values.config.serve).ingress) "proxy" }}
- name: RAY_SERVE_THROUGHPUT_OPTIMIZED
  value: "1"
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: "1"
{{- end }}
{{- if eq .Values.storage.mode "objectStore" }}
{{- range $env, $key := .Values.storage.objectStore.secretKeys }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ required "storage.objectStore.secretName is required with storage.mode=objectStore" $.Values.storage.objectStore.secretName }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
Serve's bearer tokens (config.serve.auth, serving/auth.py), only in the serving cluster's pods:
env names from config.serve.auth.token_env, Secret keys from security.serveAuth.keys, per role.
*/}}
{{- define "recsys.serveAuthEnv" -}}
{{- $auth := default (dict) (default (dict) .Values.config.serve).auth }}
{{- if $auth.enabled }}
{{- $names := required "config.serve.auth.token_env (role → env var) is required with config.serve.auth.enabled" $auth.token_env }}
{{- range $role := list "read" "write" "admin" }}
- name: {{ required (printf "config.serve.auth.token_env.%s is required" $role) (index $names $role) }}
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-serve-tokens" (include "recsys.fullname" $)) $.Values.security.serveAuth.secretName }}
      key: {{ required (printf "security.serveAuth.keys.%s is required" $role) (index $.Values.security.serveAuth.keys $role) }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "recsys.volumeMounts" -}}
- name: recsys-config
  mountPath: /etc/recsys
  readOnly: true
- name: ray-tmp
  mountPath: /tmp
{{- if eq .Values.storage.mode "pvc" }}
- name: artifacts
  mountPath: /data
{{- end }}
{{- end -}}

{{/* Volumes; arg: dict with "root" (the chart context) and "tmpSize". */}}
{{- define "recsys.volumes" -}}
{{- $ := .root -}}
- name: recsys-config
  configMap:
    name: {{ include "recsys.fullname" $ }}-config
- name: ray-tmp
  emptyDir:
    sizeLimit: {{ .tmpSize }}
{{- if eq $.Values.storage.mode "pvc" }}
- name: artifacts
  persistentVolumeClaim:
    claimName: {{ include "recsys.pvcName" $ }}
{{- end }}
{{- end -}}

{{/*
A Ray pod template. Args (dict): root, component (head|worker), image, resources, tmpSize,
nodeSelector, tolerations, serve (the serving cluster's pods: they get the Serve tokens).
*/}}
{{- define "recsys.rayPodTemplate" -}}
{{- $ := .root -}}
metadata:
  labels:
    {{- include "recsys.labels" $ | nindent 4 }}
    app.kubernetes.io/component: ray-{{ .component }}
spec:
  serviceAccountName: {{ include "recsys.serviceAccountName" $ }}
  # Only the head needs an API token: its autoscaler sidecar patches the RayCluster.
  automountServiceAccountToken: {{ and (eq .component "head") $.Values.rayCluster.enableInTreeAutoscaling }}
  securityContext:
    {{- include "recsys.podSecurityContext" $ | nindent 4 }}
  {{- with $.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: ray-{{ .component }}
      image: {{ .image }}
      imagePullPolicy: {{ $.Values.image.pullPolicy }}
      securityContext:
        {{- include "recsys.containerSecurityContext" $ | nindent 8 }}
      resources:
        {{- toYaml .resources | nindent 8 }}
      env:
        {{- include "recsys.env" $ | nindent 8 }}
        {{- if .serve }}
        {{- include "recsys.serveAuthEnv" $ | nindent 8 }}
        {{- end }}
      ports:
        {{- if eq .component "head" }}
        - {containerPort: 6379, name: gcs-server}
        - {containerPort: 8265, name: dashboard}
        - {containerPort: 10001, name: client}
        - {containerPort: 8000, name: serve}
        {{- end }}
        - {containerPort: 8080, name: metrics}
      volumeMounts:
        {{- include "recsys.volumeMounts" $ | nindent 8 }}
  volumes:
    {{- include "recsys.volumes" (dict "root" $ "tmpSize" .tmpSize) | nindent 4 }}
{{- end -}}

{{/* The RayCluster spec shared by the RayCluster, per-job clusters and the RayService. Args: root, workers (map). */}}
{{- define "recsys.rayClusterSpec" -}}
{{- $serve := .serve -}}
{{- $ := .root -}}
{{- $c := $.Values.rayCluster -}}
rayVersion: {{ $c.rayVersion | quote }}
enableInTreeAutoscaling: {{ $c.enableInTreeAutoscaling }}
{{- if $c.enableInTreeAutoscaling }}
autoscalerOptions:
  idleTimeoutSeconds: {{ $c.idleTimeoutSeconds }}
  securityContext:
    {{- include "recsys.containerSecurityContext" $ | nindent 4 }}
{{- end }}
authOptions:
  mode: {{ ternary "token" "disabled" $.Values.security.rayTokenAuth }}
headGroupSpec:
  serviceType: ClusterIP
  rayStartParams:
    dashboard-host: "0.0.0.0"
    num-cpus: {{ $c.head.numCpus | quote }}
    metrics-export-port: "8080"
  template:
    {{- include "recsys.rayPodTemplate" (dict "root" $ "component" "head" "image" (printf "%s:%s" $.Values.image.repository $.Values.image.tag) "resources" $c.head.resources "tmpSize" $c.head.tmpSize "nodeSelector" $c.head.nodeSelector "tolerations" $c.head.tolerations "serve" $serve) | nindent 4 }}
workerGroupSpecs:
{{- range $name, $g := .workers }}
{{- if $g.enabled }}
  - groupName: {{ $name }}
    replicas: {{ $g.replicas }}
    minReplicas: {{ $g.minReplicas }}
    maxReplicas: {{ $g.maxReplicas }}
    rayStartParams:
      metrics-export-port: "8080"
    template:
      {{- include "recsys.rayPodTemplate" (dict "root" $ "component" "worker" "image" (printf "%s:%s" $.Values.image.repository (ternary $.Values.image.gpuTag $.Values.image.tag $g.gpu)) "resources" $g.resources "tmpSize" $g.tmpSize "nodeSelector" $g.nodeSelector "tolerations" $g.tolerations "serve" $serve) | nindent 6 }}
{{- end }}
{{- end }}
{{- end -}}
