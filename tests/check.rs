//! `portico check`: exit codes and the exact error lines users see.

use std::path::PathBuf;
use std::process::Command;

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portico-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn check(path: &PathBuf) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--config"])
        .arg(path)
        .env_remove("RABBIT_URL")
        .env_remove("KAFKA_BROKERS")
        .output()
        .expect("runs portico");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[test]
fn the_shipped_config_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bridges.yaml");
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim_end(), format!("{}: ok (2 connections, 2 bridges)", path.display()));
}

#[test]
fn every_cross_check_error_is_reported_with_its_position() {
    let path = write(
        "cross.yaml",
        "\
connections:
  rabbit:
    protocol: amqp091
    url: amqp://guest:secret@127.0.0.1:5672/%2f
    brokers: 127.0.0.1:9092
bridges:
  - name: a
    source: { connection: rabbit, queue: q, prefetch: 0 }
    sink: { connection: kafka, topic: \"x.{routingkey}\" }
  - name: a
    source: { connection: rabbit }
    sink: { connection: rabbit, exchange: \"\", routing_key: \"{header.x\" }
",
    );
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    let file = path.display();
    let expected = [
        format!(
            "{file}:5:14: connections.rabbit.brokers: `brokers` does not apply to amqp091 connections (use `url`)"
        ),
        format!(
            "{file}:8:55: bridges[0].source.prefetch: must be at least 1: 0 means unlimited in AMQP 0-9-1"
        ),
        format!(
            "{file}:9:25: bridges[0].sink.connection: unknown connection \"kafka\"; defined connections: rabbit"
        ),
        format!(
            "{file}:9:39: bridges[0].sink.topic: template \"x.{{routingkey}}\": unknown variable {{routingkey}}; use one of {{routing_key}}, {{exchange}}, {{queue}}, {{topic}}, {{partition}}, {{key}}, {{message_id}}, {{correlation_id}}, {{subject}}, {{address}}, {{type}}, {{reply_to}}, {{content_type}}, {{group_id}}, {{app_id}} or {{header.NAME}}"
        ),
        format!("{file}:10:11: bridges[1].name: duplicate bridge name \"a\""),
        format!(
            "{file}:11:13: bridges[1].source: missing field `queue`: the AMQP 0-9-1 queue to consume"
        ),
        format!(
            "{file}:12:60: bridges[1].sink.routing_key: template \"{{header.x\": unclosed '{{' at byte 0; write '{{{{' for a literal brace"
        ),
    ];
    let got: Vec<&str> = stderr.lines().collect();
    assert_eq!(got, expected);
    assert!(!stderr.contains("secret"), "a password leaked: {stderr}");
}

#[test]
fn unknown_fields_and_wrong_types_point_at_the_field() {
    let path = write("unknown.yaml", "connections: {}\nbridges:\n  - name: a\n    sourc: {}\n");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:4:5: bridges[0].sourc: unknown field `sourc`, expected one of `name`, `source`, `sink`, `dead_letter`, `max_in_flight`, `retry`, `set`, `strict`, `move`, `rename`, `drop`, `body`",
            path.display()
        )
    );

    let path = write(
        "types.yaml",
        "connections: {}\nbridges:\n  - name: a\n    source: {connection: x, prefetch: lots}\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:4:39: bridges[0].source.prefetch: invalid type: string \"lots\", expected a \
             whole number from 1 to 65535",
            path.display()
        )
    );

    // Numbers out of range name the range, not the Rust type that holds them.
    let path = write(
        "ranges.yaml",
        "connections: {}\nbridges:\n  - name: a\n    sink: {connection: x, confirm_window: -1}\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:4:43: bridges[0].sink.confirm_window: invalid type: integer `-1`, expected a \
             whole number from 1 to 4294967295",
            path.display()
        )
    );
    let path =
        write("big.yaml", "connections: {}\nbridges:\n  - name: a\n    max_in_flight: 1.5\n");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.trim_end().ends_with(
            "bridges[0].max_in_flight: invalid type: floating point `1.5`, expected a whole \
             number from 1 to 65535"
        ),
        "{stderr}"
    );
    // A field without a rule of its own takes what its type holds.
    let path = write(
        "frame.yaml",
        "connections:\n  c: {protocol: amqp10, url: 'amqp://h', max_frame_size: -5}\nbridges: []\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.trim_end().ends_with(
            "connections.c.max_frame_size: invalid type: integer `-5`, expected a whole number \
             from 0 to 4294967295"
        ),
        "{stderr}"
    );
}

#[test]
fn a_url_the_client_cannot_read_is_refused_without_its_password() {
    let path = write(
        "badurl.yaml",
        "\
connections:
  r: { protocol: amqp091, url: 'amqp://guest:sec/ret9@127.0.0.1:5672/%2f' }
  t: { protocol: amqp10, url: 'amqp://bob:s e\"cr=et9@127.0.0.1:5672', flavor: rabbitmq }
  ok: { protocol: amqp091, url: 'amqp://h:5672' }
bridges:
  - { name: a, source: { connection: ok, queue: q }, sink: { connection: ok, exchange: x } }
",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    let file = path.display();
    let advice = "percent-encode `/`, `?`, `#`, `@`, `:`, spaces and quotes in a user name or \
                  password (`/` is %2F)";
    let expected = [
        format!(
            "{file}:2:32: connections.r.url: amqp://guest:***@127.0.0.1:5672/%2f is not a \
                 valid URL (invalid port number); {advice}"
        ),
        format!(
            "{file}:3:31: connections.t.url: amqp://bob:***@127.0.0.1:5672 is not a valid \
                 URL (it holds a space or a quote); {advice}"
        ),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);
    assert!(!stderr.contains("ret9") && !stderr.contains("cr=et9"), "{stderr}");
}

#[test]
fn a_credit_past_the_in_flight_bound_is_blamed_on_the_credit() {
    let config = |extra: &str| {
        format!(
            "\
connections:
  t: {{ protocol: amqp10, url: 'amqp://h:5672', flavor: rabbitmq }}
bridges:
  - name: a
    source: {{ connection: t, queue: q, credit: 70000 }}
    sink: {{ connection: t, queue: out }}
{extra}"
        )
    };
    let path = write("credit.yaml", &config(""));
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:5:48: bridges[0].source.credit: is also the bridge's max_in_flight, which is at \
             most 65535: lower it, or set max_in_flight on the bridge",
            path.display()
        )
    );
    let path = write("credit-bounded.yaml", &config("    max_in_flight: 1000\n"));
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn unset_environment_variables_are_named() {
    let path = write(
        "env.yaml",
        "connections:\n  k:\n    protocol: kafka\n    brokers: ${PORTICO_TEST_UNSET_VAR}\nbridges: []\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:4:14: environment variable PORTICO_TEST_UNSET_VAR is not set; set it or write ${{PORTICO_TEST_UNSET_VAR:-default}}",
            path.display()
        )
    );
}

#[test]
fn durations_need_a_unit() {
    let path = write("span.yaml", "shutdown_timeout: 10\nconnections: {}\nbridges: []\n");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("shutdown_timeout: invalid type: integer `10`, expected a string")
            || stderr.contains("invalid duration"),
        "{stderr}"
    );
}

#[test]
fn settings_that_would_break_delivery_or_never_work_are_refused() {
    let path = write(
        "unsafe.yaml",
        "\
connections:
  k:
    protocol: kafka
    brokers: 127.0.0.1:9092
    options: { enable.auto.offset.store: \"true\" }
  r: { protocol: amqp091, url: \"amqp://h:5672\" }
bridges:
  - name: a
    source: { connection: k, topics: [t], group: g }
    sink: { connection: k, topic: \"no/slashes\" }
    retry: { initial_backoff: 0ms }
",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    let lines: Vec<&str> = stderr.lines().collect();
    let file = path.display();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert_eq!(
        lines[0],
        format!(
            "{file}:5:42: connections.k.options.enable.auto.offset.store: portico sets \
             `enable.auto.offset.store` itself (for at-least-once delivery); remove it"
        )
    );
    assert!(
        lines[2].contains("bridges[0].retry.initial_backoff: must be at least 1ms"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("bridges[0].sink.topic: invalid Kafka topic \"no/slashes\""),
        "{stderr}"
    );

    // A misspelt `default` is an error, not a silently missing fallback.
    let path = write(
        "typo.yaml",
        "connections:\n  k: { protocol: kafka, brokers: \"h:9092\" }\nbridges:\n  - name: b\n    \
         source: { connection: k, topics: [t], group: g }\n    \
         sink: { connection: k, topic: { template: \"{header.t}\", defualt: x } }\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bridges[0].sink.topic: a template string, or { template:"),
        "{stderr}"
    );
}

#[test]
fn strict_mode_is_a_boolean_and_needs_a_dead_letter_behind_a_kafka_source() {
    let path = write(
        "strict.yaml",
        "\
connections:
  k: { protocol: kafka, brokers: \"h:9092\" }
  r: { protocol: amqp091, url: \"amqp://h:5672\" }
bridges:
  - name: a
    source: { connection: k, topics: [t], group: g }
    sink: { connection: r, exchange: \"\", routing_key: q }
    strict: true
  - name: b
    source: { connection: r, queue: q }
    sink: { connection: k, topic: t }
    strict: true
",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:8:13: bridges[0].strict: a Kafka source cannot skip a record, so strict mode \
             would stop the bridge at the first lossy one: add a dead_letter",
            path.display()
        )
    );

    let path = write(
        "strict-type.yaml",
        "connections:\n  r: { protocol: amqp091, url: \"amqp://h:5672\" }\nbridges:\n  - name: a\n    \
         source: { connection: r, queue: q }\n    \
         sink: { connection: r, exchange: \"\", routing_key: q }\n    strict: yes please\n",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains(":7:13: bridges[0].strict: invalid type"), "{stderr}");
}

#[test]
fn mapping_rule_errors_point_at_their_field() {
    let path = write(
        "rules.yaml",
        "\
connections:
  rabbit: { protocol: amqp091, url: \"amqp://guest:guest@127.0.0.1:5672/%2f\" }
  kafka: { protocol: kafka, brokers: \"127.0.0.1:9092\" }
bridges:
  - name: to-kafka
    source: { connection: rabbit, queue: q }
    sink: { connection: kafka, topic: t, partition: -1, timestamp: header. }
    set: { priority: \"{header.prio}\", colour: red }
    move: { correlation_id: header.corr, header.a: header.b, header.c: reply }
    rename: { headers: { old: \"\" } }
    drop: { headers: [\"x-*-trace\", ok, \"pre*\"], properties: [reply_to, replyTo] }
    body: { to: json, charset: klingon }
  - name: to-rabbit
    source: { connection: kafka, topics: [t], group: g }
    sink: { connection: rabbit, exchange: \"\", routing_key: q, partition: 1 }
    body: { to: string }
",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    let file = path.display();
    let expected = [
        format!("{file}:7:53: bridges[0].sink.partition: -1: a partition is a number >= 0"),
        format!(
            "{file}:7:68: bridges[0].sink.timestamp: \"header.\": use `creation_time`, `now` or `header.NAME`"
        ),
        format!(
            "{file}:8:47: bridges[0].set.colour: unknown property; use one of message_id, correlation_id, subject, type, reply_to, content_type, content_encoding, group_id, app_id, user_id, priority, creation_time, expiration or headers"
        ),
        format!(
            "{file}:9:52: bridges[0].move.header.a: move a property to a header (`correlation_id: header.corr`) or a header to a property (`header.corr: correlation_id`); use rename for headers"
        ),
        format!(
            "{file}:9:72: bridges[0].move.header.c: \"reply\": write header.NAME or one of the properties message_id, correlation_id, subject, type, reply_to, content_type, content_encoding, group_id, app_id, user_id, priority, creation_time, expiration"
        ),
        format!("{file}:10:31: bridges[0].rename.headers.old: a header name has 1 to 255 bytes"),
        format!(
            "{file}:11:23: bridges[0].drop.headers[0]: \"x-*-trace\": write a header name, or a prefix ending in `*` (`x-trace-*`)"
        ),
        format!(
            "{file}:11:72: bridges[0].drop.properties[1]: unknown property \"replyTo\"; use one of message_id, correlation_id, subject, type, reply_to, content_type, content_encoding, group_id, app_id, user_id, priority, creation_time, expiration"
        ),
        format!(
            "{file}:12:32: bridges[0].body.charset: unknown charset \"klingon\": use utf-8, iso-8859-1, us-ascii or another label of the WHATWG Encoding Standard (windows-1252, shift_jis, …)"
        ),
        format!(
            "{file}:12:32: bridges[0].body.charset: a charset applies to `to: text` or `to: bytes`, not \"json\""
        ),
        format!(
            "{file}:15:74: bridges[1].sink.partition: `partition` does not apply to amqp091 connections (use `routing_key`)"
        ),
        format!("{file}:16:17: bridges[1].body.to: \"string\": use text, bytes, json, map or list"),
    ];
    let got: Vec<&str> = stderr.lines().collect();
    assert_eq!(got, expected);
}

#[test]
fn a_retry_policy_is_checked_with_positions() {
    let path = write(
        "retry.yaml",
        "\
connections:
  r: { protocol: amqp091, url: \"amqp://h:5672\" }
bridges:
  - name: a
    source: { connection: r, queue: q }
    sink: { connection: r, exchange: \"\", routing_key: t }
    retry:
      max_attempts: 0
      jitter: 1.5
  - name: b
    source: { connection: r, queue: q2 }
    sink: { connection: r, exchange: \"\", routing_key: t }
    retry: { max_attempts: 5, jitter: 0.2, initial_backoff: 10ms, max_backoff: 2s }
",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    let file = path.display();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{file}:8:21: bridges[0].retry.max_attempts: must be at least 1; omit it to \
                 retry transient failures without limit"
            ),
            format!("{file}:9:15: bridges[0].retry.jitter: must be between 0.0 and 1.0"),
        ],
        "{stderr}"
    );
}

#[test]
fn a_sink_template_that_reads_what_a_rule_takes_away_is_refused() {
    let path = write(
        "reads.yaml",
        "\
connections:
  rabbit: { protocol: amqp091, url: \"amqp://guest:guest@127.0.0.1:5672/%2f\" }
  kafka: { protocol: kafka, brokers: \"127.0.0.1:9092\" }
bridges:
  - name: a
    source: { connection: rabbit, queue: q }
    sink: { connection: kafka, topic: \"t.{type}\", key: \"{header.customerId}\", timestamp: header.at }
    rename: { headers: { customerId: customer-id } }
    move: { type: header.kind, header.at: creation_time }
",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    let file = path.display();
    let expected = [
        format!(
            "{file}:7:39: bridges[0].sink.topic: reads {{type}}, which `move` takes into a header before the sink's templates run"
        ),
        format!(
            "{file}:7:56: bridges[0].sink.key: reads {{header.customerId}}, which `rename` turns into header \"customer-id\" before the sink's templates run"
        ),
        format!(
            "{file}:7:90: bridges[0].sink.timestamp: reads header.at, which `move` takes into a property before the sink reads it"
        ),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn a_confirm_window_is_at_least_one_and_only_on_amqp091_sinks() {
    let path = write(
        "window.yaml",
        "\
connections:
  r: { protocol: amqp091, url: \"amqp://h:5672\" }
  k: { protocol: kafka, brokers: \"h:9092\" }
bridges:
  - name: a
    source: { connection: r, queue: q }
    sink: { connection: r, exchange: \"\", confirm_window: 0 }
  - name: b
    source: { connection: r, queue: q }
    sink: { connection: k, topic: t, confirm_window: 64 }
  - name: c
    source: { connection: r, queue: q }
    sink: { connection: r, exchange: \"\", confirm_window: 1024 }
",
    );
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    let file = path.display();
    let expected = [
        format!(
            "{file}:7:58: bridges[0].sink.confirm_window: must be at least 1: it counts the \
             publishes that may await a confirm"
        ),
        format!(
            "{file}:10:54: bridges[1].sink.confirm_window: `confirm_window` does not apply to \
             kafka connections (use `max_in_flight on the bridge`)"
        ),
    ];
    let got: Vec<&str> = stderr.lines().collect();
    assert_eq!(got, expected, "bridge c is valid");
}
