"""auditlog.ops.port_problems: the ports of one host's services, checked (pure logic)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.auditlog.ops.plugins.filter.port_problems import (
    FilterModule,
    port_number,
    port_problems,
)


def ports(**values):
    return [{"name": name, "value": value} for name, value in values.items()]


def test_the_filter_is_registered_under_its_name():
    assert FilterModule().filters()["port_problems"] is port_problems


@pytest.mark.parametrize("value", [1, 5432, "5432", " 6379 ", 65535, "65535"])
def test_valid_ports_are_no_problem(value):
    assert port_problems(ports(redis_port=value)) == []
    assert port_number(value) == int(str(value))


def test_distinct_ports_are_no_problem():
    assert port_problems(ports(postgresql_port=5432, prometheus_postgres_exporter_port=9187)) == []
    assert port_problems([]) == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("http", "http"),
        ("", ""),
        (None, ""),
        ("80a", "80a"),
        ("8.5", "8.5"),
        ("-1", "-1"),
        (True, "True"),
        ("٣٠٠٠", "٣٠٠٠"),  # digits, but not ASCII ones
    ],
)
def test_a_value_that_is_no_number_is_named(value, shown):
    assert port_problems(ports(nginx_listen_port=value)) == [
        f"nginx_listen_port must be a port number (1-65535), not '{shown}'"
    ]


@pytest.mark.parametrize("value", [0, "0", 65536, "70000"])
def test_a_number_out_of_range_is_named(value):
    assert port_problems(ports(grafana_port=value)) == [
        f"grafana_port must be a port number (1-65535), not '{value}'"
    ]


@pytest.mark.parametrize(
    ("value", "port"),
    [("10.0.0.5:9090", 9090), (":9090", 9090), ("[::1]:9090", 9090), ("mon1.example.net:9093", 9093)],
)
def test_an_address_with_a_port_counts_as_its_port(value, port):
    assert port_number(value) == port
    assert port_problems(ports(prometheus_listen_address=value)) == []


def test_an_address_with_a_bad_port_names_the_port_part():
    assert port_problems(ports(prometheus_listen_address="10.0.0.5:prom")) == [
        "prometheus_listen_address must be a port number (1-65535), not 'prom'"
    ]
    assert port_problems(ports(prometheus_listen_address="10.0.0.5")) == [
        "prometheus_listen_address must be a port number (1-65535), not '10.0.0.5'"
    ]


def test_a_clash_names_both_variables_in_input_order():
    assert port_problems(ports(redis_port=8222, nats_port=4222, nats_monitor_port="8222")) == [
        "port 8222 is set for both redis_port and nats_monitor_port:"
        " give each service of the host its own port"
    ]


def test_a_clash_between_a_port_and_an_address_is_found():
    assert port_problems(ports(grafana_port=9090, prometheus_listen_address="10.0.0.5:9090")) == [
        "port 9090 is set for both grafana_port and prometheus_listen_address:"
        " give each service of the host its own port"
    ]


def test_three_on_one_port_are_named_together():
    assert port_problems(ports(a_port=80, b_port="80", c_port="0.0.0.0:80")) == [
        "port 80 is set for each of a_port, b_port and c_port: give each service of the host its own port"
    ]


def test_the_same_variable_given_twice_is_no_clash():
    entries = ports(redis_port=6379) + ports(redis_port="6379")
    assert port_problems(entries) == []
    bad = ports(nginx_listen_port="http") + ports(nginx_listen_port="http")
    assert port_problems(bad) == ["nginx_listen_port must be a port number (1-65535), not 'http'"]


def test_bad_values_come_first_then_each_clash_once():
    entries = ports(a_port=80, b_port="x", c_port=80, d_port=443, e_port="443", f_port=99999)
    assert port_problems(entries) == [
        "b_port must be a port number (1-65535), not 'x'",
        "f_port must be a port number (1-65535), not '99999'",
        "port 80 is set for both a_port and c_port: give each service of the host its own port",
        "port 443 is set for both d_port and e_port: give each service of the host its own port",
    ]


@pytest.mark.parametrize("entries", ["redis_port", {"name": "redis_port", "value": 6379}, None, 5])
def test_input_that_is_no_list_is_refused(entries):
    with pytest.raises(AnsibleFilterError, match="expects a list"):
        port_problems(entries)


@pytest.mark.parametrize("entry", [{"name": "redis_port"}, {"value": 6379}, "redis_port", 6379])
def test_an_entry_without_name_and_value_is_refused(entry):
    with pytest.raises(AnsibleFilterError, match="needs a name and a value"):
        port_problems([entry])
