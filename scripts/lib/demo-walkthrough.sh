# The seed's walkthrough, the part that is the same whatever the runtime: the preparation, the
# helpers that show and verify each step, and the checks of steps 4 to 7. Shared by
# scripts/demo.sh (podman) and scripts/lib/demo-docker.sh (Docker). Source it after
# scripts/lib/common.sh; do not run it.
#
# The sourcing script calls demo_prepare first, defines `runtime HOST ARGS...` (its container CLI
# on nodeHOST, shown as typed) and `runtime_quiet HOST ARGS...` (the same, not shown), and sets
# LAB_ETCD (the lab's etcd endpoints) before the first step.

# demo_prepare WORK-NAME [--keep]: root, the packages, the build; then KEEP (--keep given), WORK
# (a fresh directory /tmp/WORK-NAME.XXXXXX), LAB_DIR and BIN (the binaries' directory in it).
demo_prepare() {
  KEEP=false
  [ "${2:-}" = --keep ] && KEEP=true
  need_root
  install_packages
  build_release
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  export LAB_DIR="$WORK/lab"
  BIN="$WORK/bin"
}

# show PROMPT WORD...: the command as typed (a word with spaces or shell characters in single quotes).
# The prompt goes to stderr, so that a command's stdout stays its own.
show() {
  local w line=""
  for w in "${@:2}"; do
    [[ $w =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]] || w="'${w//\'/\'\\\'\'}'"
    line+="${line:+ }$w"
  done
  printf '\033[36m%s$\033[0m %s\n' "$1" "$line" >&2
}
# on N CMD...: runs a command on node N, echoing it as a user would type it there.
on() { local h=$1; shift; show "node$h" "$@"; lab run "$h" -- "$@"; }
ctl() { local h=$1; shift; show "node$h" overlayctl "$@"; lab run "$h" -- "$BIN/overlayctl" --etcd "$LAB_ETCD" "$@"; }
fail() { printf '\033[31mstep failed: %s\033[0m\n' "$*" >&2; exit 1; }
# The verified outcome of a step (scripts/tests/60-demo.sh and 61-demo-docker.sh assert these lines).
passed() { printf 'passed: %s\n' "$*"; }

# Step 4: overlayctl sees both containers, whichever host they run on.
demo_inspect_across_hosts() {
  ctl 1 network inspect demo
  lab run 1 -- "$BIN/overlayctl" --etcd "$LAB_ETCD" network inspect demo -o json | jq -e '.endpoints | length == 2' >/dev/null \
    || fail "inspect does not list both containers"
  passed "inspect lists test1 on node1 and test2 on node2"
}

# Step 5 (TEST2_ADDRESS): test1 on node1 and test2 on node2 ping each other, by address and by name.
demo_pings_across_hosts() {
  runtime 1 exec test1 ping -c 3 "$1" || fail "test1 cannot ping $1"
  passed "test1 pinged test2 by address"
  runtime 1 exec test1 ping -c 3 test2 || fail "test1 cannot ping test2 by name"
  passed "test1 pinged test2 by name"
  runtime 2 exec test2 ping -c 2 test1 || fail "test2 cannot ping test1 by name"
  passed "test2 pinged test1 by name"
}

# Step 6 (INTERNET_ADDRESS): test1's addresses, and its way out to the simulated internet.
demo_reaches_internet() {
  runtime 1 exec test1 ip -4 -o addr show
  runtime 1 exec test1 ping -c 2 "$1" || fail "test1 cannot reach the internet"
  passed "test1 reached the internet"
}

# Step 7, once the container redis runs on node1: it answers.
demo_redis_answers() {
  local pong=""
  for _ in $(seq 50); do
    pong=$(runtime_quiet 1 exec redis redis-cli ping 2>/dev/null) && [ "$pong" = PONG ] && break
    sleep 0.2
  done
  runtime 1 exec redis redis-cli ping
  [ "$pong" = PONG ] || fail "redis on node1 does not answer"
  passed "redis runs on node1"
}

# Step 7, once the Flask app runs on node2 as web, published on port 8080: it reaches redis by
# name, and two visits from the simulated internet count up by one.
demo_app_counts_visits() {
  local answer first second n1 n2
  # The app's own Redis client, in the app's container, by the name redis.
  answer=$(runtime 2 exec web python3 -c 'import redis; print("redis answers:", redis.Redis(host="redis").ping())') \
    || fail "the app on node2 cannot reach redis by name"
  echo "$answer"
  [ "$answer" = "redis answers: True" ] || fail "the app on node2 cannot reach redis by name"
  passed "the app on node2 reached redis by name"
  # Flask logs "Running on" once it listens.
  for _ in $(seq 100); do
    grep -q 'Running on' <<<"$(runtime_quiet 2 logs web 2>&1)" && break
    sleep 0.1
  done
  first=$(demo_visit) || fail "no answer from node2's port 8080"
  echo "$first"
  second=$(demo_visit) || fail "no second answer from node2's port 8080"
  echo "$second"
  n1=$(demo_seen "$first"); n2=$(demo_seen "$second")
  [ -n "$n1" ] && [ -n "$n2" ] || fail "the app did not answer with its count"
  [ "$n2" = $((n1 + 1)) ] || fail "the count went from $n1 to $n2, not up by one"
  passed "two curls from the internet through node2's port 8080 counted $n1 then $n2"
}

# curl from the simulated internet, to node2's underlay address and its published port.
demo_visit() {
  show internet curl "http://$(lab addr 2):8080/"
  lab run internet -- curl -sS --max-time 10 "http://$(lab addr 2):8080/"
}
# The count in the app's answer.
demo_seen() { sed -nE 's/^Hello from [^!]+! I have been seen ([0-9]+) times\.$/\1/p' <<<"$1"; }
