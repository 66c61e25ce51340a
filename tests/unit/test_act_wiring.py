"""What playbooks learn of each group from the config (drwatch.act.wiring.group_infos)."""

from __future__ import annotations

from drwatch import config
from drwatch.act.wiring import group_infos
from drwatch.model.fleet import Role
from tests.unit.test_config import minimal


def test_load_balancer_groups_say_whether_they_carry_an_eip_and_a_service_check() -> None:
    """web-lb has an Elastic IP and a service_url: move_eip and verify_service act.
    lb-eu has neither (reached through DNS): both steps will skip, saying why."""
    data = minimal()
    data["groups"] += [
        {"name": "web-lb", "role": "load_balancer", "select": {"tags": {"g": "web-lb"}},
         "elastic_ip": "web-eip", "service_url": "http://192.0.2.10/health"},
        {"name": "lb-eu", "role": "load_balancer", "select": {"tags": {"g": "lb-eu"}}},
    ]  # fmt: skip
    infos = group_infos(config.parse(data).groups)
    web, eu = infos["web-lb"], infos["lb-eu"]
    assert (web.role, web.elastic_ip, web.service_checked) == (Role.LOAD_BALANCER, "web-eip", True)
    assert (eu.elastic_ip, eu.service_checked) == (None, False)
    assert infos["app"].service_checked is False
