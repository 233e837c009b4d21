{{/* Names are cut to 52 characters so "<fullname>-scheduler" and friends stay within 63. */}}
{{- define "catalogsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "catalogsync.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "catalogsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "catalogsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "catalogsync.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "catalogsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: catalogsync
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "catalogsync.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "catalogsync.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "catalogsync.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "catalogsync.jobServiceAccount" -}}
{{- default (printf "%s-job" (include "catalogsync.fullname" .)) .Values.jobs.serviceAccount.name -}}
{{- end -}}

{{- define "catalogsync.schedulerServiceAccount" -}}
{{- default (printf "%s-scheduler" (include "catalogsync.fullname" .)) .Values.schedule.serviceAccount.name -}}
{{- end -}}

{{/* The namespaces with runs: each gets the jobs ServiceAccount and the namespaced Roles. */}}
{{- define "catalogsync.runNamespaces" -}}
{{- $namespaces := .Values.operator.watchNamespaces | default (list .Release.Namespace) -}}
{{- toJson (uniq $namespaces) -}}
{{- end -}}

{{- define "catalogsync.runNamespace" -}}
{{- default .Release.Namespace .Values.schedule.runNamespace -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for every pod of the chart. */}}
{{- define "catalogsync.podSecurityContext" -}}
runAsNonRoot: true
{{- if not (kindIs "invalid" .Values.runAsUser) }}
runAsUser: {{ .Values.runAsUser }}
{{- end }}
{{- if not (kindIs "invalid" .Values.runAsGroup) }}
runAsGroup: {{ .Values.runAsGroup }}
fsGroup: {{ .Values.runAsGroup }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "catalogsync.containerSecurityContext" -}}
runAsNonRoot: true
{{- if not (kindIs "invalid" .Values.runAsUser) }}
runAsUser: {{ .Values.runAsUser }}
{{- end }}
{{- if not (kindIs "invalid" .Values.runAsGroup) }}
runAsGroup: {{ .Values.runAsGroup }}
{{- end }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "catalogsync.imagePullSecrets" -}}
imagePullSecrets:
{{- range .Values.image.pullSecrets }}
  - name: {{ . }}
{{- end }}
{{- end -}}

{{/*
A stage's values as JSON, without the performance node pool's label and toleration when
performanceNodePool is false (a cluster without such nodes). Arguments: (list $ stageValues).
*/}}
{{- define "catalogsync.placed" -}}
{{- $root := index . 0 }}
{{- $stage := deepCopy (index . 1) }}
{{- if not $root.Values.performanceNodePool }}
{{- $_ := set $stage "nodeSelector" (omit ($stage.nodeSelector | default dict) "catalogsync.io/cpu-class") }}
{{- $kept := list }}
{{- range ($stage.tolerations | default list) }}
{{- if ne (.key | default "") "catalogsync.io/cpu-class" }}{{ $kept = append $kept . }}{{ end }}
{{- end }}
{{- $_ := set $stage "tolerations" $kept }}
{{- end }}
{{- toJson $stage }}
{{- end -}}

{{/*
A stage's pod settings in the operator's shape (operator/settings.py StagePod). Every key is
passed, null when unset, because the operator fills keys that are missing from its own defaults.
*/}}
{{- define "catalogsync.stage" -}}
{{- $stage := dict "resources" (.resources | default dict) "nodeSelector" (.nodeSelector | default dict) "tolerations" (.tolerations | default list) "affinity" nil "priorityClassName" nil "backoffLimit" .backoffLimit "activeDeadlineSeconds" .activeDeadlineSeconds "scratchSizeLimit" nil "env" (.env | default list) "podLabels" (.podLabels | default dict) "podAnnotations" (.podAnnotations | default dict) "podSecurityContext" (.podSecurityContext | default dict) "securityContext" (.securityContext | default dict) "extraVolumes" (.extraVolumes | default list) "extraVolumeMounts" (.extraVolumeMounts | default list) -}}
{{- if .affinity }}{{- $_ := set $stage "affinity" .affinity -}}{{- end -}}
{{- if .priorityClassName }}{{- $_ := set $stage "priorityClassName" .priorityClassName -}}{{- end -}}
{{- if .scratchSizeLimit }}{{- $_ := set $stage "scratchSizeLimit" .scratchSizeLimit -}}{{- end -}}
{{- toJson $stage -}}
{{- end -}}

{{/*
The CronJobs to render, as YAML: CronJob name -> settings. Without `schedules`, one CronJob named
<fullname> from `schedule` (the single-schedule layout). With `schedules`, one CronJob
<fullname>-<key> per entry: the entry's keys replace those of `schedule`, and its `run` is
deep-merged over `schedule.run`.
*/}}
{{- define "catalogsync.schedules" -}}
{{- $fullname := include "catalogsync.fullname" . }}
{{- $base := pick .Values.schedule "schedule" "timeZone" "suspend" "startingDeadlineSeconds" "runNamePrefix" "run" }}
{{- $out := dict }}
{{- if .Values.schedules }}
{{- range $key, $entry := .Values.schedules }}
{{- $merged := deepCopy $base }}
{{- range $k, $v := $entry }}
{{- if eq $k "run" }}
{{- $_ := set $merged "run" (mergeOverwrite (deepCopy $base.run) $v) }}
{{- else }}
{{- $_ := set $merged $k $v }}
{{- end }}
{{- end }}
{{- $_ := set $out (printf "%s-%s" $fullname $key) $merged }}
{{- end }}
{{- else }}
{{- $_ := set $out $fullname $base }}
{{- end }}
{{- toYaml $out }}
{{- end }}
