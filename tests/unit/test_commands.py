"""Every remote command as its exact text, from data: no SSH, no shell."""

import hashlib
import json
import re
import subprocess
from dataclasses import replace

import pytest

from dockyard import contract
from dockyard.commands import containers, engine, facts, files, history, lock, switch
from dockyard.inventory import Docker
from dockyard.spec import ContainerSpec, Health, Rendered, Slots, spec_digest
from roles.webhook import HISTORY_FILE


def test_run_container_command_line():
    spec = ContainerSpec(
        name="dockyard-x", image="img:1", ports=("127.0.0.1:1:2",), volumes=("v:/data",), env=(("A", "b c"),),
        health=Health(2, "/h"),
    )
    assert containers.run_container(spec, "x", "d1g") == (
        "docker run --detach --name dockyard-x --restart always --network dockyard "
        "--log-opt max-size=10m --log-opt max-file=3 --publish 127.0.0.1:1:2 --volume v:/data --env 'A=b c' "
        "--label dockyard.role=x --label dockyard.image=img:1 --label dockyard.spec=d1g "
        "--health-cmd 'wget -q -O /dev/null http://127.0.0.1:2/h' "
        "--health-interval 2s --health-timeout 3s --health-retries 3 img:1"
    )


def test_write_file_is_atomic_and_secret_files_are_0600():
    line = files.write_file(Rendered("/etc/dockyard/x/c.yml", b"a: 'b'\n", 0o644, secret=True))
    assert line == (
        "mkdir -p /etc/dockyard/x && printf %s YTogJ2InCg== | base64 -d > /etc/dockyard/x/c.yml.dockyard-new"
        " && chmod 600 /etc/dockyard/x/c.yml.dockyard-new && mv /etc/dockyard/x/c.yml.dockyard-new "
        "/etc/dockyard/x/c.yml"
    )


def test_the_webhook_log_and_its_audit_log_are_read_with_plain_commands():
    assert containers.logs("dockyard-webhook", 50) == "docker logs --tail 50 dockyard-webhook 2>&1"
    assert history.count() == "cat /var/lib/dockyard/webhook/history.jsonl 2>/dev/null | wc -l"
    assert history.read(last=20) == "tail -n 20 /var/lib/dockyard/webhook/history.jsonl 2>/dev/null || true"
    tail = "tail -n +4 /var/lib/dockyard/webhook/history.jsonl 2>/dev/null"
    assert history.read(since=3, until_tag="v2", timeout=1) == (
        f"i=0; until {tail} | grep -qF '\"tag\": \"v2\"' || [ $i -ge 10 ]; do i=$((i+1)); sleep 0.1; done; "
        f"{tail} || true"
    )


def test_docker_installs_from_apt_or_the_convenience_script_after_finishing_an_interrupted_run():
    assert engine.install_package(Docker()) == (
        "export DEBIAN_FRONTEND=noninteractive\n"
        "dpkg --configure -a >/dev/null 2>&1 || true\n"
        "apt-get -o DPkg::Lock::Timeout=300 -qq update && apt-get -o DPkg::Lock::Timeout=300 -qq install -y "
        "--no-install-recommends docker.io apparmor ca-certificates >/dev/null"
    )
    assert engine.install_package(Docker(install="script", script_url="https://example.test/d.sh")) == (
        "export DEBIAN_FRONTEND=noninteractive\n"
        "dpkg --configure -a >/dev/null 2>&1 || true\n"
        "command -v curl >/dev/null || (apt-get -o DPkg::Lock::Timeout=300 -qq update && "
        "apt-get -o DPkg::Lock::Timeout=300 -qq install -y curl >/dev/null)\n"
        "curl -fsSL https://example.test/d.sh -o /tmp/get-docker.sh && sh /tmp/get-docker.sh >/dev/null"
    )


GUARD = ("iptables -t raw -C PREROUTING ! -i lo -d 127.0.0.0/8 -j DROP 2>/dev/null || "
         "iptables -t raw -I PREROUTING ! -i lo -d 127.0.0.0/8 -j DROP")


def test_without_systemd_rc_local_starts_dockerd_and_the_guard_at_boot():
    assert engine.enable_at_boot(systemd=False) == (
        "if ! grep -qs 'dockyard: dockerd' /etc/rc.local; then\n"
        "  [ -f /etc/rc.local ] || printf '#!/bin/sh\\n' > /etc/rc.local\n"
        "  sed -i '/^exit 0$/d' /etc/rc.local\n"
        "  echo '(setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &)  # dockyard: dockerd' >> /etc/rc.local\n"
        "  chmod +x /etc/rc.local\n"
        "fi"
    )
    assert engine.guard_at_boot(systemd=False) == (
        "if ! grep -qs 'dockyard: loopback guard' /etc/rc.local; then\n"
        "  [ -f /etc/rc.local ] || printf '#!/bin/sh\\n' > /etc/rc.local\n"
        "  sed -i '/^exit 0$/d' /etc/rc.local\n"
        f"  echo '{GUARD}  # dockyard: loopback guard' >> /etc/rc.local\n"
        "  chmod +x /etc/rc.local\n"
        "fi"
    )
    assert engine.start_now(systemd=False) == (
        "docker info >/dev/null 2>&1 || (setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &)"
    )


def test_with_systemd_units_start_dockerd_and_the_guard_at_boot():
    assert engine.enable_at_boot(systemd=True) == "systemctl enable docker >/dev/null 2>&1"
    assert engine.guard_at_boot(systemd=True) == (
        "cat > /etc/systemd/system/dockyard-loopback-guard.service <<'UNIT'\n"
        "[Unit]\n"
        "Description=dockyard: drop packets from the network addressed to 127.0.0.0/8\n"
        "Before=docker.service\n"
        "[Service]\n"
        "Type=oneshot\n"
        f'ExecStart=/bin/sh -c "{GUARD}"\n'
        "[Install]\n"
        "WantedBy=multi-user.target\n"
        "UNIT\n"
        "systemctl daemon-reload && systemctl enable dockyard-loopback-guard >/dev/null 2>&1"
    )
    assert engine.start_now(systemd=True) == "systemctl start docker"


def test_the_guard_the_daemon_wait_and_the_docker_group():
    assert engine.guard_now() == GUARD
    assert engine.wait_for_daemon(systemd=False) == (
        "i=0; until docker info >/dev/null 2>&1; do\n"
        "  i=$((i+1)); [ $i -lt 600 ] || { echo 'dockerd did not start; see /var/log/dockerd.log' >&2; exit 1; }; "
        "sleep 0.1\n"
        "done"
    )
    assert "see `journalctl -u docker`" in engine.wait_for_daemon(systemd=True)
    assert engine.add_to_docker_group("ubuntu") == (
        "getent group docker >/dev/null || groupadd docker\n"
        "usermod -aG docker ubuntu\n"
        "su -s /bin/sh ubuntu -c 'docker info >/dev/null'"
    )


def test_the_facts_read_is_one_script_with_every_section_the_parser_reads():
    text = facts.script("ubuntu", ["/etc/b", "/etc/a b"], ["dockyard-app"], ["reg/app:2", "sha256:1"])
    lines = text.splitlines()
    marks = [line.split(";")[0].removeprefix("echo ::") for line in lines if line.startswith("echo ::")]
    assert marks == [*facts.SECTIONS, "end"]
    assert "echo ::files; sha256sum '/etc/a b' /etc/b 2>/dev/null || true" in lines
    # dockyard's containers by label, and the declared ones by name even if a hand run dropped the labels
    assert ('echo ::containers; '
            '[ -z "$ids dockyard-app" ] || docker inspect --type container $ids dockyard-app 2>/dev/null || true'
            ) in lines
    assert '[ -z "$ids" ] || docker inspect --type container $ids 2>/dev/null' in facts.script("ubuntu", [], [])
    # the declared images, looked for in the background while the rest is read, before the first section
    look = ("images=$(mktemp); docker image inspect --format '{{range .RepoTags}}{{println . $.Id}}{{end}}' "
            'reg/app:2 sha256:1 >"$images" 2>/dev/null & looking=$!')
    assert lines.index(look) < lines.index('echo ::docker; echo "$state"; [ -z "$woke" ] || echo "$woke"')
    assert 'echo ::images; wait $looking || true; cat "$images"; rm -f "$images"' in lines
    assert "echo ::images;" in facts.script("ubuntu", [], []).splitlines()


def test_the_images_section_prints_what_the_background_lookup_printed_once_it_has_ended(tmp_path):
    """The lookup and its section in a real sh, with a `docker` that answers late and fails as the engine does for
    a ref it lacks."""
    lines = facts.script("ubuntu", [], [], ["a:1", "c:3"]).splitlines()
    look = next(line for line in lines if line.startswith("images="))
    section = next(line for line in lines if line.startswith("echo ::images"))
    late = 'docker() { sleep 0.3; printf "a:1 sha256:9\\nb:2 sha256:9\\n\\n"; return 1; }'
    ran = subprocess.run(["sh", "-c", f"{late}\n{look}\n{section}"], capture_output=True, text=True, check=True)
    assert ran.stdout == "::images\na:1 sha256:9\nb:2 sha256:9\n\n"


ENGINE_STATE = (
    "docker_state() { ids=; if ! command -v dockerd >/dev/null; then state=absent; "
    "elif ids=$(docker ps -aq --filter label=dockyard.role 2>/dev/null); then state=running; "
    "else state=stopped; fi; }\n"
    "docker_state; woke=; audit=\n"
    "case $state in running) ;; *) audit=$(dpkg --audit 2>/dev/null) ;; esac\n"
)


def test_a_plain_facts_read_only_looks_at_the_engine():
    text = facts.script("ubuntu", [], [])
    assert text.startswith(ENGINE_STATE + 'echo ::docker; echo "$state"; [ -z "$woke" ] || echo "$woke"\n'
                                          'echo ::dpkg; [ -z "$audit" ] || echo "$audit"\n')


@pytest.mark.parametrize("engine, docker_section, inspected", [
    ("", "absent", ""),
    ("dockerd() { :; }; docker() { return 1; }", "stopped", ""),
    ("dockerd() { :; }; docker() { case $1 in ps) printf 'c1\\nc2\\n' ;; *) echo \"$*\" ;; esac; }", "running",
     "inspect --type container c1 c2 dockyard-app"),
])
def test_the_containers_listing_is_what_says_whether_the_engine_answers(engine, docker_section, inspected):
    text = facts.script("ubuntu", [], ["dockyard-app"])
    ran = subprocess.run(["sh", "-c", f"PATH=/nonexistent\n{engine}\n{text}"], capture_output=True, text=True)
    sections = ran.stdout.split("::")
    assert f"docker\n{docker_section}\n" in sections
    assert f"containers\n{inspected}\n".replace("\n\n", "\n") in sections


def test_deploys_facts_read_brings_a_stopped_engine_up_before_it_reads_the_containers():
    text = facts.script("ubuntu", [], [], start=True)
    assert text.startswith(
        ENGINE_STATE
        + 'if [ "$state" = stopped ] && [ -z "$audit" ]; then\n'
        "  if [ -d /run/systemd/system ]; then\n"
        "    log='`journalctl -u docker`'; how=started; "
        "[ \"$(systemctl is-active docker)\" != activating ] || how=waited\n"
        "    systemctl start --no-block docker\n"
        "  else\n"
        "    log=/var/log/dockerd.log; how=waited\n"
        "    pgrep -x dockerd >/dev/null || "
        "{ how=started; (setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &) 9>&-; }\n"
        "  fi\n"
        '  t0=$(date +%s); until docker_state; [ "$state" != stopped ]; do\n'
        "    [ $(($(date +%s) - t0)) -lt 60 ] ||\n"
        '      { echo "dockerd did not answer within 60s; see $log" >&2; exit 1; }\n'
        "    sleep 1\n"
        "  done\n"
        '  woke="$how $(($(date +%s) - t0))"\n'
        "fi\n"
        'echo ::docker; echo "$state"; [ -z "$woke" ] || echo "$woke"\n'
    )
    assert text.index("systemctl start") < text.index("echo ::containers")


def test_the_host_lock_is_taken_recorded_and_held_until_stdin_closes():
    assert lock.take("ops@laptop", "deploy.registry-ui", 4242, 300) == (
        "mkdir -p /var/lib/dockyard/lock\n"
        "exec 9>>/var/lib/dockyard/lock/host.lock\n"
        "if ! flock -n 9; then\n"
        "  printf '::waiting %s\\n' \"$(cat /var/lib/dockyard/lock/holder.json 2>/dev/null)\"\n"
        "  flock -w 300 9 || { printf '::busy %s\\n' \"$(cat /var/lib/dockyard/lock/holder.json 2>/dev/null)\"; "
        "exit 75; }\n"
        "fi\n"
        "printf '{\"who\": %s, \"task\": %s, \"pid\": 4242, \"from\": \"%s\", \"since\": \"%s\"}\\n' "
        "'\"ops@laptop\"' '\"deploy.registry-ui\"' \"${SSH_CLIENT%% *}\" \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" "
        "> /var/lib/dockyard/lock/holder.json.new\n"
        "mv /var/lib/dockyard/lock/holder.json.new /var/lib/dockyard/lock/holder.json\n"
        "echo ::locked"
    )
    # what the run does first under the lock comes between the two
    assert lock.hold() == "echo ::held\ncat >/dev/null\nflock /var/lib/dockyard/lock/run.lock true"
    # a name that is not plain text reaches the holder file as a JSON string, never as shell
    assert """'"o'"'"'p"' '"x\\""'""" in lock.take("o'p", 'x"', 1, 1)


def test_looking_at_the_lock_takes_nothing_and_steps_run_under_the_run_lock():
    assert lock.status() == (
        "if [ -e /var/lib/dockyard/lock/host.lock ] && ! flock -n /var/lib/dockyard/lock/host.lock true; then "
        "printf '::busy %s\\n' \"$(cat /var/lib/dockyard/lock/holder.json 2>/dev/null)\"; else echo ::free; fi"
    )
    assert lock.STEP_SHELL == "flock --shared --close /var/lib/dockyard/lock/run.lock sh -s"


def test_a_service_is_waited_for_by_running_its_health_check_every_tenth_of_a_second_until_it_passes():
    assert containers.wait_healthy("dockyard-registry", Health(5000, "/v2/"), timeout=60) == (
        "since=$(date +%s); until timeout 3 docker exec dockyard-registry sh -c "
        "'wget -q -O /dev/null http://127.0.0.1:5000/v2/' >/dev/null 2>&1; do "
        "if [ $(($(date +%s) - since)) -ge 60 ]; then echo 'dockyard-registry not healthy after 60s; its log:' >&2; "
        "docker logs --tail 20 dockyard-registry >&2; exit 1; fi; sleep 0.1; done"
    )
    # without a health check, it is ready once it runs
    assert containers.ready("x", None) == "timeout 3 docker exec x true >/dev/null 2>&1"


@pytest.mark.parametrize("failures, timeout, exited, stderr", [
    (2, 30, 0, ""),  # passes at the third probe
    (10**6, 1, 1, "dockyard-x not healthy after 1s; its log:\none\ntwo\n"),
])
def test_the_wait_probes_until_it_passes_or_fails_at_its_bound_with_the_last_log_lines(tmp_path, failures, timeout,
                                                                                       exited, stderr):
    """The wait in a real sh, with a `docker` whose exec fails `failures` times and whose log is two lines."""
    fake = tmp_path / "docker"
    fake.write_text(
        "#!/bin/sh\n"
        f'case "$1" in exec) echo x >> {tmp_path}/probes; [ $(wc -l < {tmp_path}/probes) -gt {failures} ] ;; '
        'logs) printf "one\\ntwo\\n" ;; esac\n'
    )
    fake.chmod(0o755)
    wait = containers.wait_healthy("dockyard-x", Health(1, "/"), timeout=timeout)
    ran = subprocess.run(["sh", "-eu", "-c", wait], capture_output=True, text=True, timeout=10,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert (ran.returncode, ran.stderr) == (exited, stderr)
    if not exited:
        assert (tmp_path / "probes").read_text() == "x\nx\nx\n"


APP = ContainerSpec(name="dockyard-app", image="reg/app:2", health=Health(8000, "/healthz"), stop_timeout=12)


def test_a_container_may_be_named_by_a_shell_word_the_script_sets():
    assert containers.run_container(ContainerSpec(name="x", image="i:1"), "x", "d", name='"$slot"') == (
        'docker run --detach --name "$slot" --restart always --network dockyard --log-opt max-size=10m '
        "--log-opt max-file=3 --label dockyard.role=x --label dockyard.image=i:1 --label dockyard.spec=d i:1"
    )


def test_a_sysctl_is_set_only_where_the_hosts_kernel_has_it():
    spec = ContainerSpec(name="x", image="i:1", sysctls=(("kernel.hostname", "h"), ("net.no_such_setting", "1")))
    line = containers.run_container(spec, "x", "d")
    words = subprocess.run(["bash", "-c", 'docker() { printf "%s\\n" "$@"; }\n' + line],
                           capture_output=True, text=True, check=True).stdout.split()
    assert "--sysctl=kernel.hostname=h" in words and not any("no_such_setting" in w for w in words)
    assert words[-1] == "i:1"


def test_a_spec_without_sysctls_keeps_the_digest_it_had_before_they_existed():
    plain = ContainerSpec(name="x", image="i:1")
    before = dict(replace(plain, image="", labels=()).as_dict())
    del before["sysctls"], before["env_file"]
    payload = {"container": before, "files": []}
    assert spec_digest(plain, ()) == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    assert spec_digest(replace(plain, sysctls=(("net.ipv4.tcp_migrate_req", "1"),)), ()) != spec_digest(plain, ())


def test_the_switch_starts_the_other_slot_gates_switches_the_proxy_then_retires_the_old_one():
    assert switch.switch(APP, "app", "d1g", Slots(8000), timeout=30) == "\n".join([
        "set -eu",
        "echo '::switch start'",
        "serving=$(sed -n 's/^to \\(.*\\):[0-9]*$/\\1/p' /var/lib/dockyard/proxy/app.upstream 2>/dev/null || true)",
        'if [ "$serving" = dockyard-app-blue ] && docker inspect dockyard-app-blue >/dev/null 2>&1; '
        "then slot=dockyard-app-green; else slot=dockyard-app-blue; fi",
        BEFORE,
        'docker rm --force "$slot" >/dev/null 2>&1 || true',
        "docker network inspect dockyard >/dev/null 2>&1 || docker network create dockyard >/dev/null",
        'docker run --detach --name "$slot" --restart always --network dockyard --stop-timeout 12 '
        "--log-opt max-size=10m --log-opt max-file=3 --label dockyard.role=app --label dockyard.image=reg/app:2 "
        "--label dockyard.spec=d1g --health-cmd 'wget -q -O /dev/null http://127.0.0.1:8000/healthz' "
        "--health-interval 2s --health-timeout 3s --health-retries 3 reg/app:2 >/dev/null",
        "echo '::switch gate'",
        'since=$(date +%s); until timeout 3 docker exec "$slot" sh -c '
        "'wget -q -O /dev/null http://127.0.0.1:8000/healthz' >/dev/null 2>&1; do "
        'if [ $(($(date +%s) - since)) -ge 30 ]; then docker logs --tail 20 "$slot" >&2 2>&1; '
        f'docker rm --force "$slot" >/dev/null; {history.append("deploy", "reg/app:2", "failure", "not healthy")}; '
        'echo "$slot not healthy after 30s, removed; ${serving:-nothing} still serves" >&2; exit 1; fi; '
        'sleep 0.1; done',
        "echo '::switch upstream'",
        'echo "to ${slot}:8000" > /var/lib/dockyard/proxy/app.upstream.dockyard-new && '
        "mv /var/lib/dockyard/proxy/app.upstream.dockyard-new /var/lib/dockyard/proxy/app.upstream",
        "echo '::switch reload'",
        "docker exec dockyard-proxy caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile >/dev/null",
        "echo '::switch retire'",
        'if [ -n "$serving" ] && [ "$serving" != "$slot" ] && docker inspect "$serving" >/dev/null 2>&1; '
        "then sleep 1; fi",
        RETIRE % '"$slot"',
        "echo '::switch record'",
        "after_id=$(docker inspect --format '{{.Image}}' \"$slot\")",
        history.append("deploy", "reg/app:2", "success", ""),
    ])


BEFORE = (
    "before=\"\"; [ -z \"$serving\" ] || before=$(docker inspect --format '{{.Image}} {{.Config.Image}}' \"$serving\" "
    "2>/dev/null || true)\n"
    "before_id=${before%% *}; before_image=${before#* }"
)


@pytest.mark.parametrize("serving, inspected, expected", [
    ("dockyard-app-blue", "sha256:1 reg/app:1", "sha256:1|reg/app:1|inspect dockyard-app-blue"),
    ("", "", "||"),  # nothing serves: docker is not asked
    ("dockyard-app-blue", "", "||inspect dockyard-app-blue"),  # it vanished meanwhile
])
def test_what_served_before_a_switch_is_read_with_one_inspect(tmp_path, serving, inspected, expected):
    (tmp_path / "docker").write_text(f'#!/bin/sh\necho "$1 $4" >> {tmp_path}/calls\nprintf "%s" "{inspected}"\n')
    (tmp_path / "docker").chmod(0o755)
    script = f"serving={serving}\n{BEFORE}\ncalls=$(cat {tmp_path}/calls 2>/dev/null || true)\n" \
             'echo "$before_id|$before_image|$calls"'
    ran = subprocess.run(["sh", "-eu", "-c", script], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True,
                         text=True, check=True)
    assert ran.stdout.strip() == expected


def test_a_release_command_runs_first_in_a_one_off_container_and_its_failure_switches_nothing():
    (name, release), (start, _), *_ = switch.phases(APP, "app", "d1g", Slots(8000, release=("flask", "db-upgrade")))
    assert (name, start) == ("release", "start")
    assert release == "\n".join([
        "serving=$(sed -n 's/^to \\(.*\\):[0-9]*$/\\1/p' /var/lib/dockyard/proxy/app.upstream 2>/dev/null || true)",
        BEFORE,
        "rc=0; out=$(docker rm --force dockyard-app-release >/dev/null 2>/dev/null || true",
        "docker run --rm --name dockyard-app-release --network dockyard reg/app:2 flask db-upgrade 2>&1) || rc=$?",
        'if [ "$rc" -ne 0 ]; then',
        '  printf "%s\\n" "$out" | tail -n 5 >&2',
        f"  {history.append('deploy', 'reg/app:2', 'failure', 'release command failed')}",
        '  echo "release command failed (exit $rc): nothing switched, ${serving:-nothing} still serves" >&2; exit 1',
        "fi",
    ])


def test_an_audit_log_line_written_by_the_shell_is_the_json_the_listener_writes(tmp_path):
    line = history.append("rollback", "127.0.0.1:5000/app:v1", "success", 'said "$HOME" and \\ `x`')
    line = line.replace(HISTORY_FILE, str(tmp_path / "history.jsonl")).replace(
        "/var/lib/dockyard/webhook", str(tmp_path))
    script = f"serving=dockyard-app-blue; slot=dockyard-app-green; before_id=sha256:1; after_id=sha256:2\n{line}"
    subprocess.run(["sh", "-eu", "-c", script], check=True)
    entry = json.loads((tmp_path / "history.jsonl").read_text())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry.pop("started"))
    assert entry == {
        "trigger": {"source": "rollback", "tag": "v1"}, "image": "127.0.0.1:5000/app:v1", "result": "success",
        "reason": 'said "$HOME" and \\ `x`',
        "before": {"id": "sha256:1", "image": "", "name": "dockyard-app-blue"},
        "after": {"id": "sha256:2", "image": "127.0.0.1:5000/app:v1", "name": "dockyard-app-green"},
    }


RETIRE = (
    "for old in dockyard-app-blue dockyard-app-green dockyard-app; do "
    'if [ "$old" != %s ] && docker inspect "$old" >/dev/null 2>&1; then docker stop --time 12 "$old" >/dev/null; '
    'docker rm --force "$old" >/dev/null; fi; done'
)


def test_settling_reloads_the_proxy_then_retires_every_container_the_upstream_file_does_not_name():
    assert switch.settle(APP, Slots(8000)) == "\n".join([
        "set -eu",
        "serving=$(sed -n 's/^to \\(.*\\):[0-9]*$/\\1/p' /var/lib/dockyard/proxy/app.upstream 2>/dev/null || true)",
        '[ -n "$serving" ] && docker inspect "$serving" >/dev/null 2>&1 || { echo '
        "'/var/lib/dockyard/proxy/app.upstream names no container of dockyard-app; run deploy again' >&2; exit 1; }",
        "docker exec dockyard-proxy caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile >/dev/null",
        RETIRE % '"$serving"',
    ])


@pytest.mark.parametrize("upstream, present, expected", [
    ("to dockyard-app-blue:8000\n", ["dockyard-app-blue"], "dockyard-app-green"),
    ("to dockyard-app-blue:8000\n", [], "dockyard-app-blue"),  # named, but gone
    ("to dockyard-app-green:8000\n", ["dockyard-app-green", "dockyard-app-blue"], "dockyard-app-blue"),
    ("to dockyard-app:8000\n", ["dockyard-app", "dockyard-app-blue"], "dockyard-app-blue"),  # from before slots
    (None, [], "dockyard-app-blue"),
])
def test_the_shell_and_the_listener_pick_the_same_slot(tmp_path, upstream, present, expected):
    """The switch's first lines in a real sh, with a `docker` that knows only `present`, against the contract's
    next_slot, which the listener runs."""
    if upstream is not None:
        (tmp_path / "app.upstream").write_text(upstream)
    (_, start), *_ = switch.phases(APP, "app", "d", Slots(8000, upstream=str(tmp_path / "app.upstream")))
    pick = "\n".join(start.splitlines()[:2])
    known = " ".join(present) or "none"
    script = f'docker() {{ for c in {known}; do [ "$2" = "$c" ] && return 0; done; return 1; }}\n{pick}\necho "$slot"'
    picked = subprocess.run(["sh", "-eu", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    serving = (contract.upstream_target(upstream or "") or ("",))[0]
    assert picked == contract.next_slot("dockyard-app", serving, present.__contains__) == expected


def test_the_facts_read_ends_with_the_upstream_file():
    text = facts.script("ubuntu", [], [])
    assert text.endswith("echo ::upstream; cat /var/lib/dockyard/proxy/app.upstream 2>/dev/null || true\necho ::end")
