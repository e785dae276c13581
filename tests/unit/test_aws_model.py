"""provider: aws, the pure model: instance plans, the wanted security group rules and the rule diff. No moto, no AWS."""

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockyard.errors import ProviderError
from dockyard.inventory import Host, parse
from dockyard.providers.aws.model import (
    Group,
    Instance,
    InstancePlan,
    Network,
    PrefixList,
    Rule,
    RuleChanges,
    Status,
    diff_rules,
    not_ready,
    plan_instances,
    unwanted,
    wanted_rules,
)

SSH_CIDR = "203.0.113.7/32"
ITSELF = Group("sg-0env")  # the environment's own security group
SWARM = {"web1": {"roles": ["manager", "registry", "proxy", "app"]}, "web2": {"roles": []}, "web3": {"roles": []}}
ALONE = {**SWARM, "web1": {"roles": ["registry", "proxy", "app"]}}  # the same hosts, no swarm


def inventory(hosts=None, ssh_cidr=SSH_CIDR, **sections):
    data = {"provider": "aws", "aws": {"ssh_cidr": ssh_cidr}, "hosts": hosts or {"web1": {"roles": ["proxy", "app"]}}}
    return parse({**data, **sections}, env="t-aws", path=Path("inventory/t-aws.yml"))


def tcp(port: int, cidr: str) -> Rule:
    return Rule.tcp(port, Network.of(cidr))


def test_the_model_loads_without_boto3():
    probe = ("import sys, dockyard.providers.aws.model; "
             "assert not {'boto3', 'botocore'} & sys.modules.keys(), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", probe], check=True)


# -- wanted rules ---------------------------------------------------------------------------------------------
def test_the_wanted_rules_are_ssh_and_the_open_ports_of_the_roles_in_use():
    inv = inventory(
        {"web1": {"roles": ["registry", "proxy", "app", "webhook"]}},
        services={"registry": {"open_to": ["10.0.0.0/8"]}, "mirror": {"open_to": ["0.0.0.0/0"]},
                  "webhook": {"open_to": ["192.0.2.0/24"]}},
    )
    assert sorted(map(str, wanted_rules(inv, ITSELF))) == [
        f"22 to {SSH_CIDR}", "443 to 0.0.0.0/0", "5000 to 10.0.0.0/8", "80 to 0.0.0.0/0", "9000 to 192.0.2.0/24",
    ]


def test_a_service_open_to_ipv4_and_ipv6_gets_a_rule_for_each():
    inv = inventory(services={"proxy": {"open_to": ["0.0.0.0/0", "::0/0"]}})
    assert wanted_rules(inv, ITSELF) == {
        tcp(22, SSH_CIDR), tcp(80, "0.0.0.0/0"), tcp(80, "::/0"), tcp(443, "0.0.0.0/0"), tcp(443, "::/0"),
    }


def test_a_swarm_opens_its_ports_to_the_hosts_of_its_own_group_and_to_no_network():
    alone = wanted_rules(inventory(ALONE), ITSELF)
    swarm = wanted_rules(inventory(SWARM, cluster="swarm"), ITSELF)
    assert sorted(map(str, swarm - alone)) == [
        "2377 to sg-0env", "5443 to sg-0env", "7946 to sg-0env", "udp 4789 to sg-0env", "udp 7946 to sg-0env",
    ]
    assert all(rule.source == ITSELF and rule.from_port == rule.to_port for rule in swarm - alone)
    assert swarm > alone and not any(rule.source == ITSELF for rule in alone)


def test_every_rule_says_why_in_words_ec2_accepts():
    """EC2 refuses a description over 255 characters or with any other character (an apostrophe, say)."""
    inv = inventory(SWARM, cluster="swarm", services={"registry": {"open_to": ["10.0.0.0/8"]}})
    descriptions = {(str(rule), rule.description) for rule in wanted_rules(inv, ITSELF)}
    overlay = "swarm overlay network (VXLAN), between the hosts of the environment"
    assert ("udp 4789 to sg-0env", overlay) in descriptions
    assert ("443 to 0.0.0.0/0", "proxy.https_port, open to services.proxy.open_to") in descriptions
    assert (f"22 to {SSH_CIDR}", "SSH for dockyard, from aws.ssh_cidr") in descriptions
    for rule, description in descriptions:
        assert re.fullmatch(r"[a-zA-Z0-9. _\-:/()#,@\[\]+=&;{}!$*]{1,255}", description), rule


def test_leaving_the_swarm_closes_its_ports_and_joining_opens_them_once():
    swarm = wanted_rules(inventory(SWARM, cluster="swarm"), ITSELF)
    alone = wanted_rules(inventory(ALONE), ITSELF)
    current = {f"sgr-{i}": rule for i, rule in enumerate(sorted(swarm, key=lambda rule: rule.order))}
    assert diff_rules(current, swarm) == RuleChanges()
    left = diff_rules(current, alone)
    assert left.add == () and left.summary() == [
        "closed 2377 to sg-0env, udp 4789 to sg-0env, 5443 to sg-0env, 7946 to sg-0env, udp 7946 to sg-0env",
    ]
    joined = diff_rules({rule_id: rule for rule_id, rule in current.items() if rule in alone}, swarm)
    assert set(joined.add) == swarm - alone and joined.revoke == {}


def test_a_rule_is_the_same_rule_whatever_its_description_says():
    """A rule added by hand, or before descriptions, is kept as it is: EC2 would refuse the same rule again."""
    described = Rule("udp", 4789, 4789, ITSELF, "swarm overlay network")
    assert described == Rule("udp", 4789, 4789, ITSELF) and len({described, Rule("udp", 4789, 4789, ITSELF)}) == 1
    assert diff_rules({"sgr-1": Rule("udp", 4789, 4789, ITSELF)}, {described}) == RuleChanges()


# -- the rule diff --------------------------------------------------------------------------------------------
def test_missing_rules_are_added_in_port_order():
    changes = diff_rules({"sgr-1": tcp(22, SSH_CIDR)}, {tcp(9000, "0.0.0.0/0"), tcp(22, SSH_CIDR), tcp(8000, "::/0")})
    assert changes == RuleChanges(add=(tcp(8000, "::/0"), tcp(9000, "0.0.0.0/0")))
    assert changes.summary() == ["opened 8000 to ::/0, 9000 to 0.0.0.0/0"]


def test_rules_not_wanted_are_revoked_by_id_whoever_added_them():
    current = {
        "sgr-3": tcp(3306, "0.0.0.0/0"),  # added by hand
        "sgr-1": tcp(22, SSH_CIDR),
        "sgr-2": tcp(8000, "0.0.0.0/0"),
        "sgr-4": Rule("tcp", 443, 443, PrefixList("pl-0123")),
    }
    changes = diff_rules(current, {tcp(22, SSH_CIDR)})
    assert changes.add == ()
    assert list(changes.revoke) == ["sgr-4", "sgr-3", "sgr-2"]
    assert changes.summary() == ["closed 443 to pl-0123, 3306 to 0.0.0.0/0, 8000 to 0.0.0.0/0"]


def test_rules_already_there_change_nothing():
    wanted = wanted_rules(inventory(), ITSELF)
    current = {f"sgr-{i}": rule for i, rule in enumerate(wanted)}
    changes = diff_rules(current, wanted)
    assert changes == RuleChanges() and changes.summary() == []


def test_an_ipv6_rule_is_its_own_rule_and_matches_however_it_is_written():
    wanted = {tcp(8000, "0.0.0.0/0"), tcp(8000, "::0/0")}
    assert diff_rules({"sgr-1": tcp(8000, "0.0.0.0/0")}, wanted).add == (tcp(8000, "::/0"),)
    assert diff_rules({"sgr-1": tcp(8000, "0.0.0.0/0"), "sgr-2": tcp(8000, "::/0")}, wanted) == RuleChanges()
    assert Network.of("::0/0").ipv6 and not Network.of("0.0.0.0/0").ipv6


def test_ssh_open_to_everyone_replaces_the_narrow_rule_and_is_flagged():
    current = {"sgr-1": tcp(22, SSH_CIDR), "sgr-2": tcp(80, "0.0.0.0/0"), "sgr-3": tcp(443, "0.0.0.0/0")}
    changes = diff_rules(current, wanted_rules(inventory(ssh_cidr="0.0.0.0/0"), ITSELF))
    assert changes.summary() == ["opened 22 to 0.0.0.0/0", f"closed 22 to {SSH_CIDR}"]
    assert Network.of("0.0.0.0/0").everyone and Network.of("::/0").everyone
    assert not Network.of(SSH_CIDR).everyone and not Network.of("10.0.0.0/8").everyone


def test_a_rule_can_come_from_a_security_group_and_use_any_protocol():
    itself = Group("sg-0abc")
    gossip = {Rule("tcp", 7946, 7946, itself), Rule("udp", 7946, 7946, itself)}
    assert len(gossip) == 2  # same port, two protocols
    changes = diff_rules({"sgr-1": Rule("udp", 7946, 7946, itself)}, gossip)
    assert changes.add == (Rule("tcp", 7946, 7946, itself),) and changes.revoke == {}
    assert [str(r) for r in sorted(gossip, key=lambda r: r.order)] == ["7946 to sg-0abc", "udp 7946 to sg-0abc"]
    assert str(Rule("tcp", 8000, 8100, Network.of("10.0.0.0/8"))) == "8000-8100 to 10.0.0.0/8"
    assert str(Rule("-1", -1, -1, itself)) == "all traffic to sg-0abc"


# -- instances ------------------------------------------------------------------------------------------------
def instance(instance_id: str, host: str, state: str, day: int) -> Instance:
    return Instance(instance_id, host, state, datetime(2025, 1, day, tzinfo=UTC))


def test_the_plan_keeps_one_instance_per_host_and_prefers_a_running_one():
    web1, web2, web3 = Host("web1"), Host("web2"), Host("web3")
    old_stopped = instance("i-1", "web1", "stopped", 1)
    running = instance("i-2", "web1", "running", 2)
    stopped = instance("i-3", "web2", "stopped", 3)
    gone = instance("i-4", "old", "running", 4)
    plan = plan_instances((web1, web2, web3), [old_stopped, running, stopped, gone])
    assert plan == InstancePlan(
        keep=((web1, running),), start=((web2, stopped),), launch=(web3,), terminate=(old_stopped, gone),
    )
    assert [unwanted((web1, web2, web3), i) for i in plan.terminate] == [
        "a second instance of web1", "old, no longer declared",
    ]
    assert unwanted((web1,), instance("i-5", "", "running", 5)) == "no dockyard:host tag, no longer declared"


def test_the_plan_for_what_already_runs_changes_nothing():
    web1 = Host("web1")
    running = instance("i-1", "web1", "pending", 1)
    assert plan_instances((web1,), [running]) == InstancePlan(keep=((web1, running),))


def test_readiness_says_what_each_instance_waits_for():
    names = {"i-1": "web1", "i-2": "web2", "i-3": "web3"}
    statuses = [Status("i-1", "running", ("ok", "ok")), Status("i-2", "running", ("initializing", "ok"))]
    assert not_ready(statuses, names) == "web2 running, status checks initializing/ok, web3 pending"
    assert not_ready([*statuses[:1], Status("i-2", "running", ("ok", "ok"))], {"i-1": "web1", "i-2": "web2"}) is None


@pytest.mark.parametrize("status", [
    Status("i-1", "terminated", ("ok", "ok")), Status("i-1", "running", ("ok", "impaired")),
])
def test_an_instance_that_died_or_failed_its_checks_is_an_error_not_a_wait(status):
    with pytest.raises(ProviderError, match=rf"^web1 \(i-1\) is {status.state} with status checks .*; read its system"):
        not_ready([status], {"i-1": "web1"})
