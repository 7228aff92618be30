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
            "{file}:9:39: bridges[0].sink.topic: template \"x.{{routingkey}}\": unknown variable {{routingkey}}; use one of {{routing_key}}, {{exchange}}, {{queue}}, {{topic}}, {{partition}}, {{key}}, {{message_id}}, {{correlation_id}}, {{subject}}, {{address}} or {{header.NAME}}"
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
            "{}:4:5: bridges[0].sourc: unknown field `sourc`, expected one of `name`, `source`, `sink`, `dead_letter`, `max_in_flight`, `retry`, `set`, `strict`",
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
            "{}:4:39: bridges[0].source.prefetch: invalid type: string \"lots\", expected u16",
            path.display()
        )
    );
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
