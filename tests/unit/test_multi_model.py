"""The `caraway multi` command-line model: node names, extended syntax, templates, errors."""

from __future__ import annotations

import pytest

from caraway.cli.multi_model import (
    Cluster,
    MultiUsageError,
    Node,
    expand_template,
    parse_argv,
)
from caraway.exceptions import CarawayError

PY = "/venv/bin/python"


def cluster(line: str, *, hostname: str = "host", cwd: str | None = "/srv") -> Cluster:
    return parse_argv(line.split(), hostname=hostname, executable=PY, cwd=cwd)


def worker_options(node: Node) -> list[str]:
    """The argv after the fixed part (executable, cmd, -n, --detach, --pidfile, --logfile)."""
    at = node.argv.index("--detach")
    return list(node.argv[at + 3 :])


# --- node names ---------------------------------------------------------------------------


def test_a_count_names_nodes_celery1_to_celeryN_on_this_host() -> None:
    assert cluster("3").names == ["celery1@host", "celery2@host", "celery3@host"]


def test_range_prefix_replaces_celery_in_counted_names() -> None:
    assert cluster("2 --range-prefix=worker").names == ["worker1@host", "worker2@host"]


def test_named_nodes_keep_their_names_in_order() -> None:
    assert cluster("image video data").names == ["image@host", "video@host", "data@host"]


def test_a_single_named_node_is_not_a_count() -> None:
    assert cluster("w1").names == ["w1@host"]


def test_hostname_option_sets_the_host_part_of_every_node() -> None:
    nodes = cluster("2 --hostname=worker.example.com")
    assert nodes.names == ["celery1@worker.example.com", "celery2@worker.example.com"]
    assert cluster("w1 -n worker.example.com").names == ["w1@worker.example.com"]


def test_hostname_option_expands_this_machines_host_name() -> None:
    nodes = cluster("w1 -n %n.internal", hostname="george.example.com")
    assert nodes.names == ["w1@george.internal"]


def test_fully_qualified_names_keep_their_own_host_with_percent_h_expanded() -> None:
    nodes = cluster("foo@%h bar@other.example.com baz@%d", hostname="george.example.com")
    assert nodes.names == [
        "foo@george.example.com",
        "bar@other.example.com",
        "baz@example.com",
    ]
    assert nodes.nodes[1].shortname == "bar"
    assert nodes.nodes[1].hostname == "other.example.com"


def test_node_indexes_start_at_one_in_command_line_order() -> None:
    assert [node.index for node in cluster("a b c")] == [1, 2, 3]


# --- the command each node runs --------------------------------------------------------------


def test_each_node_runs_the_detached_caraway_worker_with_its_name_and_files() -> None:
    (node,) = cluster("w1 -A proj -l info")
    assert node.argv == (
        PY,
        "-m",
        "caraway",
        "-A",
        "proj",
        "worker",
        "-n",
        "w1@host",
        "--detach",
        "--pidfile=/srv/w1.pid",
        "--logfile=/srv/w1%I.log",
        "-l",
        "info",
    )


def test_seed_example_gives_each_of_ten_nodes_its_queues_and_log_level() -> None:
    nodes = cluster(
        "10 -A proj -l info -Q:1-3 images,video -Q:4,5 data -Q default -l:4,5 debug"
    ).nodes
    assert len(nodes) == 10
    for number, node in enumerate(nodes, start=1):
        name = f"celery{number}"
        head = (PY, "-m", "caraway", "-A", "proj", "worker", "-n", f"{name}@host", "--detach")
        files = (f"--pidfile=/srv/{name}.pid", f"--logfile=/srv/{name}%I.log")
        if number <= 3:
            rest = ("-l", "info", "-Q", "images,video")
        elif number <= 5:
            rest = ("-l", "debug", "-Q", "data")
        else:
            rest = ("-l", "info", "-Q", "default")
        assert node.argv == head + files + rest, name


def test_option_for_one_index_overrides_the_default_for_that_node_only() -> None:
    nodes = cluster("3 -c 3 -c:1 10").nodes
    assert [worker_options(node) for node in nodes] == [
        ["-c", "10"],
        ["-c", "3"],
        ["-c", "3"],
    ]


def test_option_by_node_name_applies_to_that_node() -> None:
    nodes = cluster("image video data -c 3 -c:image 10").nodes
    assert [worker_options(node) for node in nodes] == [
        ["-c", "10"],
        ["-c", "3"],
        ["-c", "3"],
    ]


def test_lists_of_names_and_ranges_select_several_nodes() -> None:
    by_name = cluster("foo bar baz xuzzy -c 3 -c:foo,bar,baz 10").nodes
    assert [worker_options(node)[1] for node in by_name] == ["10", "10", "10", "3"]
    by_range = cluster("5 -c 3 -c:1-3 10").nodes
    assert [worker_options(node)[1] for node in by_range] == ["10", "10", "10", "3", "3"]
    mixed = cluster("5 -c 3 -c:1,4-5 10").nodes
    assert [worker_options(node)[1] for node in mixed] == ["10", "3", "3", "10", "10"]


def test_indexes_also_select_named_nodes() -> None:
    nodes = cluster("w1 w2 w3 -c:2 8").nodes
    assert [worker_options(node) for node in nodes] == [[], ["-c", "8"], []]


def test_full_node_name_and_prefixed_short_name_select_a_node() -> None:
    assert worker_options(cluster("2 -c:celery2 4").nodes[1]) == ["-c", "4"]
    assert worker_options(cluster("w1 w2 -c:w2@host 4").nodes[1]) == ["-c", "4"]


def test_option_given_only_for_some_nodes_is_absent_from_the_others() -> None:
    nodes = cluster("w1 w2 -E --autoscale:w2=4,2").nodes
    assert worker_options(nodes[0]) == ["-E"]
    assert worker_options(nodes[1]) == ["-E", "--autoscale=4,2"]


def test_later_selection_wins_when_two_select_the_same_node() -> None:
    nodes = cluster("3 -c:1-3 4 -c:2 9").nodes
    assert [worker_options(node) for node in nodes] == [["-c", "4"], ["-c", "9"], ["-c", "4"]]


def test_override_keeps_the_position_of_the_default_it_replaces() -> None:
    (first, _) = cluster("2 -Q default -l info -Q:1 fast").nodes
    assert worker_options(first) == ["-Q", "fast", "-l", "info"]


def test_repeated_option_keeps_the_last_value() -> None:
    assert worker_options(cluster("w1 -c 2 -c 5").nodes[0]) == ["-c", "5"]


def test_long_options_take_values_only_after_equals_as_celery_multi() -> None:
    nodes = cluster("w1 --loglevel=debug --without-gossip --queues=a,b").nodes
    assert worker_options(nodes[0]) == ["--loglevel=debug", "--without-gossip", "--queues=a,b"]
    # As with celery multi, a bare word after a long option is another node name.
    assert cluster("w1 --without-gossip w2").names == ["w1@host", "w2@host"]


def test_short_flag_followed_by_option_takes_no_value() -> None:
    assert worker_options(cluster("w1 -E -l info").nodes[0]) == ["-E", "-l", "info"]


def test_arguments_after_double_dash_go_verbatim_to_every_worker() -> None:
    nodes = cluster("w1 w2 -c 2 -- --something -x %n").nodes
    assert worker_options(nodes[0]) == ["-c", "2", "--something", "-x", "w1"]
    assert worker_options(nodes[1]) == ["-c", "2", "--something", "-x", "w2"]


def test_global_options_go_before_the_worker_subcommand() -> None:
    (node,) = cluster("w1 -c 2 --broker=redis://h/1 -A proj --result-backend=redis://h/2")
    worker_at = node.argv.index("worker")
    assert node.argv[3:worker_at] == (
        "--broker=redis://h/1",
        "-A",
        "proj",
        "--result-backend=redis://h/2",
    )
    assert worker_options(node) == ["-c", "2"]


def test_app_can_differ_per_node() -> None:
    first, second = cluster("w1 w2 -A proj -A:w2 other").nodes
    assert first.argv[3:5] == ("-A", "proj")
    assert second.argv[3:5] == ("-A", "other")


def test_multi_own_options_are_not_passed_to_workers() -> None:
    (node,) = cluster(
        "w1 -n h2 --range-prefix=x --start-timeout=5 --detach --executable=/py -q --nosplash -c 1"
    )
    assert node.argv[0] == "/py"
    assert node.argv.count("--detach") == 1
    assert worker_options(node) == ["-c", "1"]


def test_custom_cmd_replaces_the_worker_module() -> None:
    (node,) = cluster("w1 -A proj --cmd=/opt/fake_worker.py")
    assert node.argv[:4] == (PY, "/opt/fake_worker.py", "-A", "proj")
    assert node.argv[4:6] == ("-n", "w1@host")


def test_reserved_flags_set_multi_options_and_do_not_swallow_the_next_word() -> None:
    nodes = cluster("w1 -q w2 --verbose --nosplash --no-color")
    assert nodes.names == ["w1@host", "w2@host"]
    assert nodes.options.quiet and nodes.options.verbose
    assert nodes.options.nosplash and nodes.options.no_color
    assert cluster("w1").options.start_timeout == 30.0
    assert cluster("w1 --start-timeout=2.5").options.start_timeout == 2.5


# --- pid and log files -----------------------------------------------------------------------


def test_default_pid_and_log_files_are_in_the_current_directory() -> None:
    (node,) = cluster("w1", cwd="/home/me/proj")
    assert node.pidfile == "/home/me/proj/w1.pid"
    assert node.logfile == "/home/me/proj/w1%I.log"
    assert node.main_logfile == "/home/me/proj/w1.log"


def test_relative_paths_stay_relative_without_a_cwd() -> None:
    (node,) = cluster("w1", cwd=None)
    assert (node.pidfile, node.logfile) == ("w1.pid", "w1%I.log")


def test_file_templates_expand_node_name_host_and_domain_but_not_child_index() -> None:
    (node,) = cluster(
        "w1 --pidfile=/run/%n/%p.pid --logfile=/log/%h/%d/%n-%i%I.log",
        hostname="george.example.com",
    )
    assert node.pidfile == "/run/w1/w1@george.example.com.pid"
    assert node.logfile == "/log/george.example.com/example.com/w1-%i%I.log"
    assert node.main_logfile == "/log/george.example.com/example.com/w1-0.log"
    assert f"--pidfile={node.pidfile}" in node.argv
    assert f"--logfile={node.logfile}" in node.argv


def test_short_pid_and_log_file_options_are_understood() -> None:
    (node,) = cluster("w1 -p run/%n.pid -f log/%n.log")
    assert (node.pidfile, node.logfile) == ("/srv/run/w1.pid", "/srv/log/w1.log")
    assert worker_options(node) == []


def test_pidfile_can_be_set_per_node() -> None:
    first, second = cluster("w1 w2 --pidfile=/a/%n.pid --pidfile:w2=/b/x.pid").nodes
    assert (first.pidfile, second.pidfile) == ("/a/w1.pid", "/b/x.pid")


def test_option_values_expand_per_node() -> None:
    nodes = cluster("w1 w2 -Q %n.q --statedb=/var/%n.db").nodes
    assert worker_options(nodes[1]) == ["-Q", "w2.q", "--statedb=/var/w2.db"]


def test_node_expand_gives_the_templates_the_expand_command_prints() -> None:
    node = cluster("w1", hostname="george.example.com").nodes[0]
    assert node.expand("%p|%n|%N|%h|%d|%i|%I|%z") == (
        "w1@george.example.com|w1|w1|george.example.com|example.com|%i|%I|%z"
    )


def test_expand_template_leaves_unknown_letters_alone() -> None:
    assert expand_template("%a-%b-%%-%", {"a": "1"}) == "1-%b-%%-%"


# --- finding nodes ---------------------------------------------------------------------------


def test_find_accepts_full_name_short_name_or_index() -> None:
    nodes = cluster("w1 w2")
    assert nodes.find("w2@host").shortname == "w2"
    assert nodes.find("w2").name == "w2@host"
    assert nodes.find("1").name == "w1@host"


def test_find_unknown_node_names_the_known_ones() -> None:
    with pytest.raises(MultiUsageError, match=r"unknown node 'w9'; nodes are w1@host, w2@host"):
        cluster("w1 w2").find("w9")


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-c 3", r"no nodes given"),
        ("0", r"node count must be at least 1"),
        ("5 -Q:5-3 data", r"malformed range '5-3' in -Q:5-3: 5 is after 3"),
        ("3 -Q:4 data", r"no node at index '4' in -Q:4: indexes run from 1 to 3"),
        ("3 -Q:0 data", r"no node at index '0'"),
        ("3 -Q:2-7 data", r"no node at index '2-7'"),
        ("w1 w2 -c:w9 4", r"unknown node 'w9' in -c:w9; nodes are w1, w2"),
        ("w1 -c:1,,2 4", r"unknown node '' in -c:1,,2"),
        ("w1 -c: 4", r"malformed option '-c:'"),
        ("w1 -c:1:2 4", r"malformed option '-c:1:2'"),
        ("w1 w1", r"node named more than once: w1@host"),
        ("w1 @host", r"malformed node name '@host'"),
        ("w1 --start-timeout=soon", r"--start-timeout must be a positive number"),
        ("w1 --start-timeout=0", r"--start-timeout must be a positive number"),
    ],
)
def test_bad_input_raises_one_clear_usage_error(line: str, message: str) -> None:
    with pytest.raises(MultiUsageError, match=message):
        cluster(line)


def test_usage_error_is_a_caraway_error_and_a_value_error() -> None:
    assert issubclass(MultiUsageError, CarawayError)
    assert issubclass(MultiUsageError, ValueError)
