{{/*
Names, labels, images, the paths inside the pod, the rendered wardgate.yaml, and the checks
that refuse an unsafe or unworkable set of values before anything reaches the cluster.
*/}}

{{- define "wardgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wardgate.fullname" -}}
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

{{- define "wardgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wardgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wardgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wardgate.labels" -}}
helm.sh/chart: {{ include "wardgate.chart" . }}
{{ include "wardgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: authorization-sidecar
{{- end }}

{{- define "wardgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wardgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference: repository@digest when a digest is set, else repository:tag. */}}
{{- define "wardgate.imageRef" -}}
{{- $img := index . 0 -}}
{{- $defaultTag := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $defaultTag $img.tag | toString) -}}
{{- end -}}
{{- end }}

{{/* Where things live inside the pod. */}}
{{- define "wardgate.configDir" -}}/etc/wardgate/config{{- end }}
{{- define "wardgate.policiesDir" -}}/etc/wardgate/policies{{- end }}
{{- define "wardgate.candidateDir" -}}/etc/wardgate/candidate-policies{{- end }}
{{- define "wardgate.tlsDir" -}}/etc/wardgate/tls{{- end }}
{{- define "wardgate.dataDir" -}}/var/lib/wardgate{{- end }}

{{/* limits.shutdown_grace_ms, default 20000 (wardgate's own default). */}}
{{- define "wardgate.shutdownGraceMs" -}}
{{- dig "limits" "shutdown_grace_ms" 20000 .Values.wardgate.config | int64 -}}
{{- end }}

{{/* The grace in whole seconds, rounded up. */}}
{{- define "wardgate.shutdownGraceSeconds" -}}
{{- div (add (include "wardgate.shutdownGraceMs" . | int64) 999) 1000 -}}
{{- end }}

{{/* audit.drain_timeout_ms in whole seconds, rounded up (wardgate's default: 5000). */}}
{{- define "wardgate.auditDrainSeconds" -}}
{{- div (add (dig "audit" "drain_timeout_ms" 5000 .Values.wardgate.config | int64) 999) 1000 -}}
{{- end }}

{{/*
The pod's terminationGracePeriodSeconds: pre-stop sleep + in-flight drain (shutdown_grace_ms) +
audit delivery (drain_timeout_ms) + a margin for the app to stop.
*/}}
{{- define "wardgate.terminationGracePeriodSeconds" -}}
{{- $l := .Values.wardgate.lifecycle -}}
{{- add (int64 $l.preStopSleepSeconds) (include "wardgate.shutdownGraceSeconds" . | int64) (include "wardgate.auditDrainSeconds" . | int64) (int64 $l.afterDrainSeconds) -}}
{{- end }}

{{- define "wardgate.policiesConfigMapName" -}}
{{- default (printf "%s-policies" (include "wardgate.fullname" .)) .Values.policies.existingConfigMap -}}
{{- end }}

{{- define "wardgate.candidateConfigMapName" -}}
{{- default (printf "%s-candidate-policies" (include "wardgate.fullname" .)) .Values.policies.candidate.existingConfigMap -}}
{{- end }}

{{/*
The policy files the chart's own ConfigMap holds, as YAML `name: content`: `policies.files` when
any is given, else the bundled files/policies/ (*.cedar, *.cedarschema, *.json; top level only).
*/}}
{{- define "wardgate.policyFiles" -}}
{{- $files := dict -}}
{{- if .Values.policies.files -}}
{{- $files = .Values.policies.files -}}
{{- else -}}
{{- range $path, $_ := .Files.Glob "files/policies/*.{cedar,cedarschema,json}" -}}
{{- $_ := set $files (base $path) ($.Files.Get $path) -}}
{{- end -}}
{{- end -}}
{{- toYaml $files -}}
{{- end }}

{{/* The checked wardgate.yaml. */}}
{{- define "wardgate.config" -}}
{{- $v := .Values -}}
{{- $cfg := deepCopy $v.wardgate.config -}}
{{- $_ := set $cfg "listen" (printf "%s:%d" $v.wardgate.bindAddress (int $v.wardgate.ports.proxy)) -}}
{{- $_ := set $cfg "admin_listen" (printf "%s:%d" $v.wardgate.bindAddress (int $v.wardgate.ports.admin)) -}}
{{- $_ := set $cfg "upstream" (printf "%s://127.0.0.1:%d" $v.app.scheme (int $v.app.port)) -}}
{{- if $v.wardgate.tls.enabled -}}
{{- $tlsDir := include "wardgate.tlsDir" . -}}
{{- $_ := set $cfg "tls" (dict "cert_file" (printf "%s/tls.crt" $tlsDir) "key_file" (printf "%s/tls.key" $tlsDir)) -}}
{{- end -}}
{{- $dir := include "wardgate.policiesDir" . -}}
{{- $pol := dict "dir" $dir "schema" (printf "%s/%s" $dir $v.policies.schemaFile) "namespace" $v.policies.namespace -}}
{{- if $v.policies.entitiesFile -}}
{{- $_ := set $pol "entities" (printf "%s/%s" $dir $v.policies.entitiesFile) -}}
{{- end -}}
{{- if $v.policies.candidate.enabled -}}
{{- $_ := set $pol "candidate_dir" (include "wardgate.candidateDir" .) -}}
{{- end -}}
{{- $_ := set $cfg "policies" $pol -}}
{{- /* A spooled sink without spool_dir would spool beside the (read-only) config file. */ -}}
{{- $sinks := list -}}
{{- range $i, $sink := (dig "audit" "sinks" (list) $cfg) -}}
{{- $s := deepCopy $sink -}}
{{- if and (has (toString $s.type) (list "http" "syslog")) (not (hasKey $s "spool_dir")) -}}
{{- $_ := set $s "spool_dir" (printf "%s/spool/%s-%d" (include "wardgate.dataDir" $) $s.type $i) -}}
{{- end -}}
{{- $sinks = append $sinks $s -}}
{{- end -}}
{{- if hasKey $cfg "audit" -}}
{{- $_ := set $cfg.audit "sinks" $sinks -}}
{{- end -}}
{{- $limits := deepCopy (default (dict) $cfg.limits) -}}
{{- $_ := set $limits "shutdown_grace_ms" (include "wardgate.shutdownGraceMs" . | int64) -}}
{{- $_ := set $cfg "limits" $limits -}}
{{- toYaml $cfg -}}
{{- end }}

{{/*
Refuses values that would be unsafe or could not work, with a message naming the value.
*/}}
{{- define "wardgate.checks" -}}
{{- $v := .Values -}}
{{- if and (not $v.networkPolicy.enabled) (not $v.app.loopbackOnly) -}}
{{- fail "networkPolicy.enabled=false would let other pods reach the app's port around wardgate: keep the NetworkPolicy, or make the app bind 127.0.0.1 and set app.loopbackOnly=true" -}}
{{- end -}}
{{- if eq (int $v.app.port) (int $v.wardgate.ports.proxy) -}}
{{- fail (printf "app.port and wardgate.ports.proxy are both %d: they share the pod's network namespace" (int $v.app.port)) -}}
{{- end -}}
{{- if eq (int $v.app.port) (int $v.wardgate.ports.admin) -}}
{{- fail (printf "app.port and wardgate.ports.admin are both %d: they share the pod's network namespace" (int $v.app.port)) -}}
{{- end -}}
{{- if and $v.wardgate.tls.enabled (not $v.wardgate.tls.secretName) -}}
{{- fail "wardgate.tls.enabled needs wardgate.tls.secretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- if and (eq $v.wardgate.dataVolume.type "persistentVolumeClaim") (not $v.wardgate.dataVolume.claimName) -}}
{{- fail "wardgate.dataVolume.type=persistentVolumeClaim needs wardgate.dataVolume.claimName" -}}
{{- end -}}
{{- if not $v.policies.existingConfigMap -}}
{{- $files := include "wardgate.policyFiles" . | fromYaml -}}
{{- if not (hasKey $files $v.policies.schemaFile) -}}
{{- fail (printf "the policy files have no schema `%s` (policies.schemaFile)" $v.policies.schemaFile) -}}
{{- end -}}
{{- if and $v.policies.entitiesFile (not (hasKey $files $v.policies.entitiesFile)) -}}
{{- fail (printf "the policy files have no entities file `%s` (policies.entitiesFile; \"\" for none)" $v.policies.entitiesFile) -}}
{{- end -}}
{{- $cedar := 0 -}}
{{- range $name, $_ := $files -}}{{- if hasSuffix ".cedar" $name -}}{{- $cedar = add1 $cedar -}}{{- end -}}{{- end -}}
{{- if eq $cedar 0 -}}
{{- fail "the policy files hold no *.cedar file (policies.files or the bundled files/policies)" -}}
{{- end -}}
{{- end -}}
{{- if and $v.policies.candidate.enabled (not $v.policies.candidate.existingConfigMap) (not $v.policies.candidate.files) -}}
{{- fail "policies.candidate.enabled needs policies.candidate.existingConfigMap or policies.candidate.files" -}}
{{- end -}}
{{- /* Audit files and spools must land on a writable volume: the root filesystem is read-only. */ -}}
{{- $writable := list (include "wardgate.dataDir" .) -}}
{{- range $v.wardgate.extraVolumeMounts -}}
{{- if not .readOnly -}}{{- $writable = append $writable .mountPath -}}{{- end -}}
{{- end -}}
{{- range $i, $sink := (dig "audit" "sinks" (list) $v.wardgate.config) -}}
{{- range $key := list "path" "spool_dir" -}}
{{- if hasKey $sink $key -}}
{{- $p := index $sink $key | toString -}}
{{- $ok := false -}}
{{- range $writable -}}{{- if hasPrefix (printf "%s/" (trimSuffix "/" .)) $p -}}{{- $ok = true -}}{{- end -}}{{- end -}}
{{- if not $ok -}}
{{- fail (printf "wardgate.config.audit.sinks[%d].%s `%s` is not under a writable mount (%s): the root filesystem is read-only" $i $key $p (join ", " $writable)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}
