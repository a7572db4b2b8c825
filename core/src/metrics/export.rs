//! The switch's counters in Prometheus' text exposition format (version 0.0.4),
//! encoded by `prometheus-client`, the official Rust client.
//!
//! The hot path keeps its plain atomics ([`Metrics`]); a scrape reads them once
//! through a [`Collector`] and hands the values to the library's encoder, which
//! writes the names (counters get their `_total`), `HELP`/`TYPE` lines, label
//! escaping and cumulative histogram buckets. Families whose labels come from a
//! fixed set (end reasons, hooks) list every value, zeros included, so a rate
//! is defined from the first scrape; status codes are listed once seen.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{
    CallShed, DatagramDrop, END_REASONS, Histogram, Metrics, NgFailure, PolicyBackend, PolicyHook,
    RefreshFailureCause, RequestShed, SESSION_TIMEOUT_CAUSES,
};

/// The `Content-Type` of [`encode`]'s output: what Prometheus scrapes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Values a scrape reads from outside [`Metrics`] (owned by other parts).
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Contacts in the location service; `None` without a registrar.
    pub registered_contacts: Option<u64>,
    /// Live SIP transactions of every worker.
    pub transactions: u64,
    /// Every trunk gateway's health and counts.
    pub gateways: Vec<GatewaySeries>,
    /// TCP's and TLS's connections: transport, then the counts.
    pub connections: Vec<ConnectionSeries>,
}

/// One stream transport's connections as the scrape shows them.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSeries {
    /// `tcp` or `tls`.
    pub transport: &'static str,
    pub open: u64,
    pub accepted: u64,
    pub connected: u64,
    pub refused: u64,
    pub closed: u64,
    pub tls_failures: u64,
}

/// One gateway as the scrape shows it (from the gateway table).
#[derive(Debug, Clone, Default)]
pub struct GatewaySeries {
    pub trunk: String,
    /// Its address.
    pub gateway: String,
    /// Takes calls (neither down by probes nor resting after a 503).
    pub up: bool,
    pub attempts: u64,
    pub failures: u64,
    pub calls_in_flight: u64,
}

/// Every `vigil_*` family, as the text a `GET /metrics` answers.
pub fn encode(metrics: &Arc<Metrics>, gauges: Gauges) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        metrics: metrics.clone(),
        gauges,
    }));
    let mut text = String::with_capacity(16 * 1024);
    prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// One scrape's view of the counters.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    gauges: Gauges,
}

impl Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder) -> Result<(), fmt::Error> {
        let m = &*self.metrics;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);

        gauge(
            &mut out,
            "vigil_calls_active",
            "Calls started and not yet ended",
            m.active_calls(),
        )?;
        gauge(
            &mut out,
            "vigil_legs_active",
            "Call legs held: two per call, until both are torn down (an ended call's BYE may still await its answer)",
            m.active_legs(),
        )?;
        counter(
            &mut out,
            "vigil_calls_started",
            "Call attempts: INVITEs admitted and routed, or refused for want of a route or by a policy; each ends in one CDR",
            load(&m.calls_started),
        )?;
        counter(
            &mut out,
            "vigil_calls_answered",
            "Calls the callee answered (2xx)",
            load(&m.calls_answered),
        )?;
        let failed: Vec<([(&str, u16); 1], u64)> = m
            .calls_failed
            .nonzero()
            .map(|(code, n)| ([("code", code)], n))
            .collect();
        counter_family(
            &mut out,
            "vigil_calls_failed",
            "Calls that ended unanswered, by the final status the caller got",
            failed,
        )?;
        counter_family(
            &mut out,
            "vigil_calls_ended",
            "Calls ended, by the CDR's end_reason",
            END_REASONS
                .iter()
                .map(|&r| ([("end_reason", r.as_str())], m.calls_ended(r))),
        )?;
        counter_family(
            &mut out,
            "vigil_session_timeouts",
            "Calls ended by a session timer (RFC 4028), by cause: refresh timeout, refresh error status, peer never refreshed, policy",
            SESSION_TIMEOUT_CAUSES
                .iter()
                .enumerate()
                .map(|(i, &cause)| ([("cause", cause)], m.session_timeouts(i))),
        )?;
        counter(
            &mut out,
            "vigil_refreshes_sent",
            "Session refreshes (UPDATE or re-INVITE) Vigil sent",
            load(&m.refreshes_sent),
        )?;
        counter(
            &mut out,
            "vigil_refreshes_answered",
            "Session refreshes answered 2xx",
            load(&m.refreshes_answered),
        )?;
        counter_family(
            &mut out,
            "vigil_refreshes_failed",
            "Session refreshes that failed, by cause: no final answer (timeout), an error status, or the session expired while the refresh awaited its answer (session_expired)",
            RefreshFailureCause::ALL
                .iter()
                .map(|&c| ([("cause", c.as_str())], m.refreshes_failed(c))),
        )?;
        histogram(
            &mut out,
            "vigil_refresh_lateness_seconds",
            "How late session refreshes left, behind the moment they were due",
            &m.refresh_lateness,
        )?;
        histogram(
            &mut out,
            "vigil_receive_wait_seconds",
            "How long received datagrams waited in the kernel's socket buffer before Vigil read them",
            &m.receive_wait,
        )?;
        counter(
            &mut out,
            "vigil_keepalives_sent",
            "NAT keep-alives sent to registered contacts",
            load(&m.keepalives_sent),
        )?;
        counter(
            &mut out,
            "vigil_trunk_registration_failures",
            "Vigil's registrations with trunks' registrars that failed (refused or unanswered)",
            load(&m.trunk_registration_failures),
        )?;
        histogram(
            &mut out,
            "vigil_keepalive_interval_deviation_seconds",
            "How far each contact's keep-alive interval was from its period",
            &m.keepalive_deviation,
        )?;
        if let Some(contacts) = self.gauges.registered_contacts {
            gauge(
                &mut out,
                "vigil_registered_contacts",
                "Contacts registered with the registrar",
                contacts,
            )?;
        }
        let hooks = || {
            PolicyHook::ALL.iter().flat_map(|&hook| {
                PolicyBackend::ALL.iter().map(move |&backend| {
                    let labels = [("hook", hook.as_str()), ("backend", backend.as_str())];
                    (labels, m.hook(hook, backend))
                })
            })
        };
        counter_family(
            &mut out,
            "vigil_policy_hook_calls",
            "Hook calls into Lua scripts and plugins, by hook and backend",
            hooks().map(|(l, h)| (l, load(&h.calls))),
        )?;
        counter_family(
            &mut out,
            "vigil_policy_hook_errors",
            "Hook calls that failed (error, budget, memory, panic, invalid decision): the next source or the default decided",
            hooks().map(|(l, h)| (l, load(&h.errors))),
        )?;
        counter_family(
            &mut out,
            "vigil_policy_hook_seconds",
            "Time spent in hook calls, by hook and backend",
            hooks().map(|(l, h)| (l, load(&h.nanos) as f64 / 1e9)),
        )?;
        counter(
            &mut out,
            "vigil_policy_errors",
            "Policy failures of any kind (failed hook calls, refused call_start overrides): a default applied instead",
            load(&m.policy_errors),
        )?;
        counter_family(
            &mut out,
            "vigil_config_reloads",
            "Config reloads, by result: ok (applied) or failed (the running config stayed)",
            [
                ([("result", "ok")], load(&m.config_reloads)),
                ([("result", "failed")], load(&m.config_reload_failures)),
            ],
        )?;
        counter_family(
            &mut out,
            "vigil_datagrams_dropped",
            "Datagrams handed to no worker, by reason (malformed ones answered 400 and forbidden ones 403 where possible)",
            DatagramDrop::ALL
                .iter()
                .map(|&r| ([("reason", r.as_str())], m.datagrams_dropped(r))),
        )?;
        counter_family(
            &mut out,
            "vigil_calls_shed",
            "New calls answered 503 by the overload limits, by reason (max_calls, max_cps, overload: the worker was falling behind, max_transactions, source_transactions)",
            CallShed::ALL
                .iter()
                .map(|&r| ([("reason", r.as_str())], m.calls_shed(r))),
        )?;
        counter_family(
            &mut out,
            "vigil_requests_shed",
            "Other new requests (REGISTER, OPTIONS, ...) answered 503 by the limits, by reason",
            RequestShed::ALL
                .iter()
                .map(|&r| ([("reason", r.as_str())], m.requests_shed(r))),
        )?;
        gauge(
            &mut out,
            "vigil_transactions",
            "Live SIP transactions (client and server) of every worker",
            self.gauges.transactions,
        )?;
        counter(
            &mut out,
            "vigil_cdr_write_errors",
            "Failed attempts to write CDRs (to the CDR file or its spill, or to reopen or replay them); each is retried and no CDR is dropped",
            load(&m.cdr_write_errors),
        )?;
        gauge(
            &mut out,
            "vigil_cdrs_pending",
            "CDRs not yet in the CDR file: held in memory or in the spill file",
            load(&m.cdrs_pending),
        )?;
        counter(
            &mut out,
            "vigil_cdr_db_written",
            "CDR rows committed to the database (cdr.postgres)",
            load(&m.cdr_db_written),
        )?;
        histogram(
            &mut out,
            "vigil_cdr_db_batch_seconds",
            "How long each batch insert of CDRs into the database took",
            &m.cdr_db_batch,
        )?;
        counter(
            &mut out,
            "vigil_cdr_db_errors",
            "Failed batch inserts of CDRs into the database; each is retried from the spool and no CDR is dropped",
            load(&m.cdr_db_errors),
        )?;
        counter(
            &mut out,
            "vigil_cdr_db_rejected",
            "CDRs the database refused for their content (a data or constraint error), set aside in the spool's rejected.cdrs so the rows behind them go on",
            load(&m.cdr_db_rejected),
        )?;
        counter(
            &mut out,
            "vigil_cdr_spool_errors",
            "Failed appends to (a full disk), reads from or trims of the database's CDR spool",
            load(&m.cdr_spool_errors),
        )?;
        gauge(
            &mut out,
            "vigil_cdr_spool_depth",
            "CDRs in the database's spool, not yet committed to the database",
            load(&m.cdr_spool_depth),
        )?;
        counter(
            &mut out,
            "vigil_state_writes",
            "Changes the state store took: established calls saved, ended, forgotten once billed",
            load(&m.state_writes),
        )?;
        counter(
            &mut out,
            "vigil_state_write_failures",
            "Batches the state store refused; each is retried and calls go on",
            load(&m.state_write_failures),
        )?;
        gauge(
            &mut out,
            "vigil_state_lag_milliseconds",
            "How long the oldest change not yet in the state store has waited",
            load(&m.state_lag_ms),
        )?;
        rtpengine_families(&mut out, m)?;
        gateway_families(&mut out, &self.gauges.gateways)?;
        connection_families(&mut out, &self.gauges.connections)
    }
}

/// The connection families (issue 19), one series per stream transport.
fn connection_families(out: &mut DescriptorEncoder, series: &[ConnectionSeries]) -> fmt::Result {
    let label = |c: &ConnectionSeries| [("transport", c.transport)];
    let mut open = out.encode_descriptor(
        "vigil_connections_open",
        "TCP and TLS connections open now, accepted and opened by Vigil",
        None,
        MetricType::Gauge,
    )?;
    for c in series {
        ConstGauge::new(c.open).encode(open.encode_family(&label(c))?)?;
    }
    type Field = fn(&ConnectionSeries) -> u64;
    let counters: [(&str, &str, Field); 5] = [
        ("vigil_connections_accepted", "Connections accepted", |c| {
            c.accepted
        }),
        (
            "vigil_connections_opened",
            "Connections Vigil opened to peers",
            |c| c.connected,
        ),
        (
            "vigil_connections_refused",
            "Connections refused at accept (limits) or that Vigil could not open",
            |c| c.refused,
        ),
        (
            "vigil_connections_closed",
            "Connections closed, whoever closed them",
            |c| c.closed,
        ),
        (
            "vigil_tls_handshake_failures",
            "TLS handshakes that failed or took too long, either side",
            |c| c.tls_failures,
        ),
    ];
    for (name, help, value) in counters {
        counter_family(out, name, help, series.iter().map(|c| (label(c), value(c))))?;
    }
    Ok(())
}

/// The gateway families (issue 18), one series per trunk and gateway.
fn gateway_families(out: &mut DescriptorEncoder, gateways: &[GatewaySeries]) -> fmt::Result {
    let label = |g: &GatewaySeries| [("trunk", g.trunk.clone()), ("gateway", g.gateway.clone())];
    counter_family(
        out,
        "vigil_gateway_attempts",
        "B-leg INVITEs sent to each gateway (a failover's next attempt counts at the next gateway)",
        gateways.iter().map(|g| (label(g), g.attempts)),
    )?;
    counter_family(
        out,
        "vigil_gateway_failures",
        "Attempts a gateway failed: no response within invite_timeout, Timer B, or a failover status",
        gateways.iter().map(|g| (label(g), g.failures)),
    )?;
    for (name, help, value) in [
        (
            "vigil_gateway_up",
            "1 while a gateway takes calls, 0 while probes find it down or it rests after a 503 with Retry-After",
            (|g: &GatewaySeries| u64::from(g.up)) as fn(&GatewaySeries) -> u64,
        ),
        (
            "vigil_gateway_calls_in_flight",
            "Calls whose B leg is with a gateway now (ringing or answered)",
            |g: &GatewaySeries| g.calls_in_flight,
        ),
    ] {
        let mut family = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for g in gateways {
            ConstGauge::new(value(g)).encode(family.encode_family(&label(g))?)?;
        }
    }
    Ok(())
}

/// The rtpengine families (issue 17), one series per engine address.
fn rtpengine_families(out: &mut DescriptorEncoder, m: &Metrics) -> fmt::Result {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let engines = m.rtpengines();
    let label = |addr: std::net::SocketAddr| [("engine", addr.to_string())];
    counter_family(
        out,
        "vigil_rtpengine_requests",
        "ng requests sent to each rtpengine, health pings included (not their retransmissions)",
        engines.iter().map(|e| (label(e.addr), load(&e.requests))),
    )?;
    counter_family(
        out,
        "vigil_rtpengine_retransmissions",
        "ng requests sent again for want of a reply",
        engines
            .iter()
            .map(|e| (label(e.addr), load(&e.retransmissions))),
    )?;
    let failures = engines.iter().flat_map(|e| {
        NgFailure::ALL.iter().map(|&kind| {
            let labels = [
                ("engine", e.addr.to_string()),
                ("kind", kind.as_str().into()),
            ];
            (labels, e.failures(kind))
        })
    });
    counter_family(
        out,
        "vigil_rtpengine_failures",
        "ng requests that failed, by kind: timeout (no reply after every retransmission), rejected (result error), malformed (a reply that did not decode)",
        failures,
    )?;
    counter_family(
        out,
        "vigil_rtpengine_late_replies",
        "ng replies that came after their request had timed out (dropped)",
        engines
            .iter()
            .map(|e| (label(e.addr), load(&e.late_replies))),
    )?;
    let mut rtt = out.encode_descriptor(
        "vigil_rtpengine_round_trip_seconds",
        "Time from an ng request's first send to its reply, per rtpengine",
        None,
        MetricType::Histogram,
    )?;
    for e in &engines {
        let (buckets, sum) = e.round_trip.buckets();
        let count = buckets.iter().map(|&(_, n)| n).sum();
        rtt.encode_family(&label(e.addr))?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    let mut up = out.encode_descriptor(
        "vigil_rtpengine_up",
        "1 while every worker sees the rtpengine up (it answers), 0 when any sees it down; only engines in use",
        None,
        MetricType::Gauge,
    )?;
    for e in &engines {
        if let Some(is_up) = e.is_up() {
            ConstGauge::new(u64::from(is_up)).encode(up.encode_family(&label(e.addr))?)?;
        }
    }
    gauge(
        out,
        "vigil_relayed_calls",
        "Calls whose media is relayed through rtpengine now (media: relay)",
        m.relayed_calls(),
    )?;
    counter(
        out,
        "vigil_media_timeouts",
        "Relayed calls ended because their media was dead (no RTP for media.timeout, by media.timeout_mode; media.hold_timeout on hold) and the media_timeout policy agreed",
        load(&m.media_timeouts),
    )?;
    counter(
        out,
        "vigil_rtpengine_no_engine",
        "ng requests refused at once because no rtpengine was up (the call gets media.on_failure)",
        load(&m.ng_no_engine),
    )?;
    counter(
        out,
        "vigil_rtpengine_stray_replies",
        "ng replies that matched no request (unknown cookie, or a source other than the engine asked)",
        load(&m.ng_stray_replies),
    )
}

fn counter(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(out.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(out: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(out.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A counter family: one series per label set.
fn counter_family<L, V>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result
where
    L: EncodeLabelSet,
    V: prometheus_client::encoding::EncodeCounterValue,
{
    let mut family = out.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A [`Histogram`] of durations, in seconds (the encoder makes the buckets
/// cumulative, as Prometheus requires).
fn histogram(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> fmt::Result {
    let (buckets, sum) = histogram.buckets();
    let count = buckets.iter().map(|&(_, n)| n).sum();
    out.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cdr::{CdrRecord, EndReason, EndedBy};

    fn cdr(end_reason: EndReason, answered: bool, sip_code: Option<u16>) -> CdrRecord {
        let t0 = Instant::now();
        CdrRecord {
            id: crate::cdr::CdrId::from_random(1),
            call_id: "a@b".into(),
            b_call_id: Some("vgl00-1".into()),
            caller: "1001".into(),
            callee: "0049301234".into(),
            trunk_in: "pbx".into(),
            trunk_out: Some("carrier".into()),
            start: t0,
            answer: answered.then_some(t0),
            end: t0,
            end_reason,
            ended_by: EndedBy::Switch,
            sip_code,
            refresh_failure: None,
            extra: Vec::new(),
            media: None,
            attempts: Vec::new(),
        }
    }

    /// The value of the series `line_start` (name and labels, as printed).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
            .parse()
            .expect("a number")
    }

    #[test]
    fn a_scrape_shows_every_family_with_help_and_type() {
        let m = Arc::new(Metrics::default());
        let text = encode(&m, Gauges::default()).expect("encode");
        for family in [
            "vigil_calls_active gauge",
            "vigil_legs_active gauge",
            "vigil_calls_started_total counter",
            "vigil_calls_answered_total counter",
            "vigil_calls_failed_total counter",
            "vigil_calls_ended_total counter",
            "vigil_session_timeouts_total counter",
            "vigil_refreshes_sent_total counter",
            "vigil_refreshes_answered_total counter",
            "vigil_refreshes_failed_total counter",
            "vigil_refresh_lateness_seconds histogram",
            "vigil_receive_wait_seconds histogram",
            "vigil_keepalives_sent_total counter",
            "vigil_trunk_registration_failures_total counter",
            "vigil_keepalive_interval_deviation_seconds histogram",
            "vigil_policy_hook_calls_total counter",
            "vigil_policy_hook_errors_total counter",
            "vigil_policy_hook_seconds_total counter",
            "vigil_policy_errors_total counter",
            "vigil_config_reloads_total counter",
            "vigil_datagrams_dropped_total counter",
            "vigil_cdr_write_errors_total counter",
            "vigil_cdrs_pending gauge",
            "vigil_cdr_db_written_total counter",
            "vigil_cdr_db_batch_seconds histogram",
            "vigil_cdr_db_errors_total counter",
            "vigil_cdr_spool_errors_total counter",
            "vigil_cdr_db_rejected_total counter",
            "vigil_cdr_spool_depth gauge",
            "vigil_state_writes_total counter",
            "vigil_state_write_failures_total counter",
            "vigil_state_lag_milliseconds gauge",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "{family}:\n{text}"
            );
            let name = family.split(' ').next().unwrap_or_default();
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        }
        assert!(
            !text.contains("vigil_registered_contacts"),
            "no registrar, no gauge"
        );
        assert_eq!(
            value(&text, "vigil_calls_ended_total{end_reason=\"caller-bye\"}"),
            0.0
        );
        assert!(
            !text.contains("vigil_calls_failed_total{"),
            "codes appear once seen"
        );
        let with_registrar = Gauges {
            registered_contacts: Some(3),
            transactions: 7,
            gateways: vec![GatewaySeries {
                trunk: "carrier".into(),
                gateway: "192.0.2.1:5060".into(),
                up: true,
                attempts: 5,
                failures: 2,
                calls_in_flight: 1,
            }],
            connections: vec![ConnectionSeries {
                transport: "tls",
                open: 3,
                tls_failures: 2,
                ..ConnectionSeries::default()
            }],
        };
        let text = encode(&m, with_registrar).expect("encode");
        assert_eq!(value(&text, "vigil_registered_contacts"), 3.0);
        assert_eq!(value(&text, "vigil_transactions"), 7.0);
        let gw = "{trunk=\"carrier\",gateway=\"192.0.2.1:5060\"}";
        assert_eq!(
            value(&text, &format!("vigil_gateway_attempts_total{gw}")),
            5.0
        );
        assert_eq!(
            value(&text, &format!("vigil_gateway_failures_total{gw}")),
            2.0
        );
        assert_eq!(value(&text, &format!("vigil_gateway_up{gw}")), 1.0);
        assert_eq!(
            value(&text, &format!("vigil_gateway_calls_in_flight{gw}")),
            1.0
        );
        assert_eq!(
            value(&text, "vigil_connections_open{transport=\"tls\"}"),
            3.0
        );
        assert_eq!(
            value(
                &text,
                "vigil_tls_handshake_failures_total{transport=\"tls\"}"
            ),
            2.0
        );
    }

    #[test]
    fn calls_are_counted_from_start_to_their_cdr() {
        let m = Arc::new(Metrics::default());
        for _ in 0..4 {
            m.call_placed();
        }
        for _ in 0..2 {
            Metrics::count(&m.calls_answered);
        }
        m.call_ended(&cdr(EndReason::CallerBye, true, None));
        m.call_ended(&cdr(EndReason::Rejected, false, Some(486)));
        m.call_released();
        m.call_released();
        let mut timeout = cdr(EndReason::SessionTimeout, true, None);
        timeout.refresh_failure = Some("408".into());
        m.call_ended(&timeout);

        let text = encode(&m, Gauges::default()).expect("encode");
        assert_eq!(value(&text, "vigil_calls_started_total"), 4.0);
        assert_eq!(value(&text, "vigil_calls_answered_total"), 2.0);
        assert_eq!(value(&text, "vigil_calls_active"), 1.0);
        assert_eq!(value(&text, "vigil_legs_active"), 4.0);
        assert_eq!(value(&text, "vigil_calls_failed_total{code=\"486\"}"), 1.0);
        assert_eq!(
            value(&text, "vigil_calls_ended_total{end_reason=\"caller-bye\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "vigil_calls_ended_total{end_reason=\"rejected\"}"),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "vigil_calls_ended_total{end_reason=\"session-timeout\"}"
            ),
            1.0
        );
        assert_eq!(
            value(&text, "vigil_session_timeouts_total{cause=\"status\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "vigil_session_timeouts_total{cause=\"timeout\"}"),
            0.0
        );
    }

    #[test]
    fn refreshes_hooks_reloads_and_drops_carry_their_labels() {
        let m = Arc::new(Metrics::default());
        Metrics::count(&m.refreshes_sent);
        m.refresh_failed(RefreshFailureCause::Timeout);
        m.hook_called(
            PolicyHook::CallStart,
            PolicyBackend::Lua,
            Duration::from_millis(250),
            false,
        );
        m.hook_called(
            PolicyHook::CallStart,
            PolicyBackend::Lua,
            Duration::from_millis(250),
            true,
        );
        Metrics::count(&m.config_reloads);
        Metrics::count(&m.config_reload_failures);
        Metrics::count(&m.config_reload_failures);
        m.datagram_dropped(DatagramDrop::Forbidden);
        Metrics::count(&m.cdr_write_errors);
        m.cdrs_pending.store(42, Ordering::Relaxed);

        let text = encode(&m, Gauges::default()).expect("encode");
        assert_eq!(value(&text, "vigil_cdr_write_errors_total"), 1.0);
        assert_eq!(value(&text, "vigil_cdrs_pending"), 42.0);
        assert_eq!(value(&text, "vigil_refreshes_sent_total"), 1.0);
        assert_eq!(
            value(&text, "vigil_refreshes_failed_total{cause=\"timeout\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "vigil_refreshes_failed_total{cause=\"status\"}"),
            0.0
        );
        let series = "{hook=\"call_start\",backend=\"lua\"}";
        assert_eq!(
            value(&text, &format!("vigil_policy_hook_calls_total{series}")),
            2.0
        );
        assert_eq!(
            value(&text, &format!("vigil_policy_hook_errors_total{series}")),
            1.0
        );
        assert_eq!(
            value(&text, &format!("vigil_policy_hook_seconds_total{series}")),
            0.5
        );
        assert_eq!(
            value(
                &text,
                "vigil_policy_hook_calls_total{hook=\"hangup\",backend=\"plugin\"}"
            ),
            0.0
        );
        assert_eq!(
            value(&text, "vigil_config_reloads_total{result=\"ok\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "vigil_config_reloads_total{result=\"failed\"}"),
            2.0
        );
        assert_eq!(
            value(&text, "vigil_datagrams_dropped_total{reason=\"forbidden\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "vigil_datagrams_dropped_total{reason=\"malformed\"}"),
            0.0
        );
    }

    #[test]
    fn rtpengine_families_are_labelled_by_engine_address() {
        let m = Arc::new(Metrics::default());
        let text = encode(&m, Gauges::default()).expect("encode");
        for family in [
            "vigil_rtpengine_requests_total counter",
            "vigil_rtpengine_failures_total counter",
            "vigil_rtpengine_round_trip_seconds histogram",
            "vigil_rtpengine_up gauge",
            "vigil_rtpengine_no_engine_total counter",
            "vigil_relayed_calls gauge",
            "vigil_media_timeouts_total counter",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "{family}:\n{text}"
            );
        }
        let a = m.rtpengine("127.0.0.1:2223".parse().expect("addr"));
        let b = m.rtpengine("127.0.0.2:2223".parse().expect("addr"));
        assert!(
            Arc::ptr_eq(&a, &m.rtpengine(a.addr)),
            "one entry per address"
        );
        Metrics::count(&a.requests);
        Metrics::count(&a.requests);
        a.failed(NgFailure::Timeout);
        a.round_trip.record(Duration::from_micros(300));
        a.watch();
        a.went_up();
        b.watch();
        b.watch();
        b.went_up();
        Metrics::count(&m.ng_no_engine);
        let text = encode(&m, Gauges::default()).expect("encode");
        let one = "{engine=\"127.0.0.1:2223\"}";
        let two = "{engine=\"127.0.0.2:2223\"}";
        assert_eq!(
            value(&text, &format!("vigil_rtpengine_requests_total{one}")),
            2.0
        );
        assert_eq!(
            value(&text, &format!("vigil_rtpengine_requests_total{two}")),
            0.0
        );
        assert_eq!(
            value(
                &text,
                "vigil_rtpengine_failures_total{engine=\"127.0.0.1:2223\",kind=\"timeout\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                &format!("vigil_rtpengine_round_trip_seconds_count{one}")
            ),
            1.0
        );
        assert_eq!(value(&text, &format!("vigil_rtpengine_up{one}")), 1.0);
        assert_eq!(
            value(&text, &format!("vigil_rtpengine_up{two}")),
            0.0,
            "one of two workers sees it down"
        );
        assert_eq!(value(&text, "vigil_rtpengine_no_engine_total"), 1.0);
        a.unwatch(true);
        let text = encode(&m, Gauges::default()).expect("encode");
        assert!(
            !text.contains(&format!("vigil_rtpengine_up{one}")),
            "an engine no client tracks has no up gauge"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_in_seconds() {
        let m = Arc::new(Metrics::default());
        m.refresh_lateness.record(Duration::from_micros(80));
        m.refresh_lateness.record(Duration::from_micros(80));
        m.refresh_lateness.record(Duration::from_millis(3));
        m.refresh_lateness.record(Duration::from_secs(20));
        let text = encode(&m, Gauges::default()).expect("encode");
        let h = "vigil_refresh_lateness_seconds";
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"0.0001\"}}")), 2.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"0.0025\"}}")), 2.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"0.005\"}}")), 3.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"10\"}}")), 3.0);
        assert_eq!(value(&text, &format!("{h}_bucket{{le=\"+Inf\"}}")), 4.0);
        assert_eq!(value(&text, &format!("{h}_count")), 4.0);
        assert!((value(&text, &format!("{h}_sum")) - 20.00316).abs() < 1e-9);
        let bounds = text
            .lines()
            .filter(|l| l.starts_with(&format!("{h}_bucket")))
            .count();
        assert_eq!(bounds, 17, "16 bounds and +Inf:\n{text}");
    }

    #[test]
    fn media_timeout_policy_hook_and_end_reason_have_their_series() {
        let m = Arc::new(Metrics::default());
        m.hook_called(
            PolicyHook::MediaTimeout,
            PolicyBackend::Plugin,
            Duration::from_millis(1),
            true,
        );
        m.call_ended(&cdr(EndReason::MediaTimeout, true, None));
        // Three calls relayed, one of them ended by dead media.
        for _ in 0..3 {
            Metrics::count(&m.relays_started);
        }
        Metrics::count(&m.relays_stopped);
        Metrics::count(&m.media_timeouts);
        let text = encode(&m, Gauges::default()).expect("encode");
        assert_eq!(value(&text, "vigil_relayed_calls"), 2.0);
        assert_eq!(value(&text, "vigil_media_timeouts_total"), 1.0);
        let series = "{hook=\"media_timeout\",backend=\"plugin\"}";
        for (family, expected) in [
            ("vigil_policy_hook_calls_total", 1.0),
            ("vigil_policy_hook_errors_total", 1.0),
            ("vigil_policy_hook_seconds_total", 0.001),
        ] {
            assert_eq!(value(&text, &format!("{family}{series}")), expected);
        }
        let lua = "{hook=\"media_timeout\",backend=\"lua\"}";
        assert_eq!(
            value(&text, &format!("vigil_policy_hook_calls_total{lua}")),
            0.0
        );
        assert_eq!(
            value(
                &text,
                "vigil_calls_ended_total{end_reason=\"media-timeout\"}"
            ),
            1.0
        );
    }
}
