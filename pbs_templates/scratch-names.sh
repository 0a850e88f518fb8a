# (included by the PBS templates) CFITSIO reads "[...]" in a file name as a filter expression, and PBS names
# an array task's TMPDIR (and jobfs) after its id: .../pbs.123[4].server. Each such scratch variable gets a
# bracket-free name for this task: a symlink in its nearest bracket-free parent, removed when the task ends.
dwf_links=""
for dwf_var in TMPDIR JOBFS PBS_JOBFS{% if scratch_vars is defined %}{% for var in scratch_vars %} {{ var }}{% endfor %}{% endif %}; do
  dwf_dir="${!dwf_var:-}"
  case "$dwf_dir" in *[][]*) ;; *) continue ;; esac
  dwf_parent="$dwf_dir"
  while case "$dwf_parent" in *[][]*) true ;; *) false ;; esac; do dwf_parent="${dwf_parent%/*}"; done
  dwf_safe="${dwf_parent:-/tmp}/dwf-scratch.$$.$dwf_var"
  if ln -sfn "$dwf_dir" "$dwf_safe" 2>/dev/null; then export "$dwf_var=$dwf_safe"; dwf_links="$dwf_links $dwf_safe"; fi
done
trap 'rm -f $dwf_links' EXIT
trap 'exit 143' TERM  # (qdel, walltime: the EXIT trap runs once the task has stopped)
