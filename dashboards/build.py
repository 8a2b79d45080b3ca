#!/usr/bin/env python3
"""Writes sluice's Grafana dashboards (dashboards/grafana/*.json) from the panel lists below.

    python3 dashboards/build.py          # rewrite the JSON files
    python3 dashboards/build.py --check  # fail if a committed file differs (CI runs this)

The panels are data, kept here once: every query is a PromQL expression over sluice's own
metrics (src/metrics/), the recording rules (dashboards/prometheus/rules.yml), RabbitMQ's
rabbitmq_prometheus metrics and prometheus-redis-exporter's. Grafana variables: $pool,
$job_id, and the usual $__rate_interval.
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "grafana"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def ts(title, *targets, unit="short", width=12, stack=False, description=""):
    return {"type": "timeseries", "title": title, "unit": unit, "width": width,
            "targets": targets, "stack": stack, "description": description}


def stat(title, *targets, unit="short", width=6, description=""):
    return {"type": "stat", "title": title, "unit": unit, "width": width,
            "targets": targets, "description": description}


def q(expr, legend=""):
    return (expr, legend)


def p95(metric, by="", window=RATE):
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile(0.95, sum by ({group}) (rate({metric}_bucket[{window}])))"


POOL = 'pool=~"$pool"'

DASHBOARDS = {
    "sluice-overview": {
        "title": "sluice — overview",
        "description": "Is work flowing, where is it stuck, what is failing, who is working.",
        "variables": ["pool"],
        "panels": [
            stat("Backlog (rows)", q(f"sum(sluice:backlog_rows:max{{{POOL}}})"),
                 description="Rows of running inference jobs not processed yet: what the autoscaler scales on."),
            stat("Active jobs", q("sum(max by (status) (sluice_jobs))")),
            stat("Busy workers", q(f"sum(sluice:busy_workers:sum{{{POOL}}})")),
            stat("Dead-lettered tasks", q('sum(rabbitmq_queue_messages_ready{queue=~".+[.]dead"})'),
                 description="Tasks that failed for good; each job they belong to failed."),
            ts("Jobs submitted / min", q(f"sum by (kind, source) (rate(sluice_jobs_submitted_total[{RATE}])) * 60", "{{kind}} via {{source}}")),
            ts("Jobs finished / min", q(f"sum by (kind, status) (rate(sluice_jobs_finished_total[{RATE}])) * 60", "{{kind}} {{status}}")),
            ts("Jobs by status", q("max by (status) (sluice_jobs)", "{{status}}"), stack=True),
            ts("Backlog per pool", q(f"sluice:backlog_rows:max{{{POOL}}}", "{{pool}} rows"),
               q(f"max by (pool) (sluice_backlog_jobs{{{POOL}}})", "{{pool}} jobs")),
            ts("Rows / s", q("sluice:rows_per_second:rate1m", "ok"),
               q("sluice:rows_failed_per_second:rate1m", "failed")),
            ts("Tasks / s by outcome", q(f"sum by (kind, outcome) (rate(sluice_tasks_total[{RATE}]))", "{{kind}} {{outcome}}")),
            ts("Workers", q(f"count by (pool, provider) (sluice_worker_info{{{POOL}}})", "{{pool}} ({{provider}})"),
               q(f"sluice:busy_workers:sum{{{POOL}}}", "{{pool}} busy")),
            ts("Rejected submissions (1 h)", q("sum by (reason_class) (increase(sluice_submissions_rejected_total[1h]))", "{{reason_class}}")),
            ts("Job failure ratio (15 min)", q("sluice:job_failure_ratio:rate15m", "failed / finished"), unit="percentunit"),
            ts("Scrape targets up", q("sum by (job) (up)", "{{job}}")),
        ],
    },
    "sluice-throughput": {
        "title": "sluice — jobs and throughput",
        "description": "How fast work goes and where the time is spent: stages, batches, padding, S3, models.",
        "variables": ["pool"],
        "panels": [
            ts("Rows / s", q("sluice:rows_per_second:rate1m", "rows/s")),
            ts("Tokens / s", q("sluice:tokens_per_second:rate1m", "real tokens/s")),
            ts("Padding ratio", q("sluice:padding_ratio:rate5m", "all tokens"),
               q(f"histogram_quantile(0.9, sum by (le) (rate(sluice_padding_ratio_bucket[{RATE}])))", "p90 of chunks"),
               unit="percentunit",
               description="Share of the tokens fed to the model that are padding (lower is better)."),
            ts("Rows per batch", q(f"histogram_quantile(0.5, sum by (le) (rate(sluice_inference_batch_rows_bucket[{RATE}])))", "p50"),
               q(p95("sluice_inference_batch_rows"), "p95")),
            ts("Stage time p95", q(p95("sluice_stage_seconds", "stage"), "{{stage}}"), unit="s",
               description="read and write: per chunk of rows (S3, parsing, serialising); tokenize: per chunk; run and pool: per batch."),
            ts("Batch run time p95", q(p95("sluice_inference_batch_seconds"), "run"), unit="s"),
            ts("Shard time p50 / p95", q(f"histogram_quantile(0.5, sum by (le) (rate(sluice_shard_seconds_bucket[{RATE}])))", "p50"),
               q(p95("sluice_shard_seconds"), "p95"), unit="s"),
            ts("Job duration p95 (1 h)", q(p95("sluice_job_duration_seconds", "kind, status", "1h"), "{{kind}} {{status}}"), unit="s"),
            ts("Tasks in flight", q("sum by (instance) (sluice_tasks_in_flight)", "{{instance}}")),
            ts("Out-of-memory batches / min", q(f"sum(rate(sluice_inference_oom_total[{RATE}])) * 60", "OOM")),
            ts("S3 request time p95", q(p95("sluice_s3_request_seconds", "op"), "{{op}}"), unit="s"),
            ts("S3 bytes / s", q(f"sum by (direction) (rate(sluice_s3_bytes_total[{RATE}]))", "{{direction}}"), unit="Bps"),
            ts("S3 errors / s", q(f"sum by (op) (rate(sluice_s3_errors_total[{RATE}]))", "{{op}}")),
            ts("Model cache", q(f"sum by (result) (increase(sluice_model_cache_total[1h]))", "{{result}}")),
        ],
    },
    "sluice-training": {
        "title": "sluice — training",
        "description": "Training jobs while they run: loss, evaluation, learning rate, checkpoints, leases.",
        "variables": ["job_id"],
        "panels": [
            ts("Loss", q('sluice_training_loss{job_id=~"$job_id"}', "{{job_id}}")),
            ts("Evaluation", q('sluice_training_eval{job_id=~"$job_id", metric=~"accuracy|macro_f1"}', "{{job_id}} {{metric}}"), unit="percentunit"),
            ts("Evaluation loss", q('sluice_training_eval{job_id=~"$job_id", metric="loss"}', "{{job_id}}")),
            ts("Learning rate", q('sluice_training_learning_rate{job_id=~"$job_id"}', "{{job_id}}")),
            ts("Progress", q('sluice_training_step{job_id=~"$job_id"} / sluice_training_total_steps{job_id=~"$job_id"}', "{{job_id}}"), unit="percentunit"),
            ts("ETA", q('sluice_training_eta_seconds{job_id=~"$job_id"}', "{{job_id}}"), unit="s"),
            ts("Steps / s", q(f"sum by (instance) (rate(sluice_training_steps_total[{RATE}]))", "{{instance}}")),
            ts("Checkpoints / min", q(f"sum by (outcome) (rate(sluice_checkpoints_total[{RATE}])) * 60", "{{outcome}}")),
            ts("Checkpoint write p95", q(p95("sluice_checkpoint_write_seconds"), "p95"), unit="s"),
            ts("Lease events (1 h)", q("sum by (event) (increase(sluice_job_leases_total[1h]))", "{{event}}")),
            ts("Feature cache (1 h)", q("sum by (result) (increase(sluice_feature_cache_total[1h]))", "{{result}}")),
        ],
    },
    "sluice-services": {
        "title": "sluice — RabbitMQ and Redis",
        "description": "The broker's queues (rabbitmq_prometheus, per object) and Redis (prometheus-redis-exporter).",
        "variables": [],
        "panels": [
            ts("Ready messages by queue", q("sum by (queue) (rabbitmq_queue_messages_ready)", "{{queue}}")),
            ts("Unacked messages by queue", q("sum by (queue) (rabbitmq_queue_messages_unacked)", "{{queue}}")),
            ts("Consumers by queue", q("sum by (queue) (rabbitmq_queue_consumers)", "{{queue}}")),
            ts("Messages published / s", q(f"sum(rate(rabbitmq_global_messages_received_total[{RATE}]))", "published")),
            ts("RabbitMQ connections", q("sum(rabbitmq_connections)", "connections")),
            ts("Redis up", q("redis_up", "up")),
            ts("Redis commands / s", q(f"sum(rate(redis_commands_processed_total[{RATE}]))", "commands/s")),
            ts("Redis memory", q("redis_memory_used_bytes", "used"), unit="bytes"),
            ts("Redis clients", q("redis_connected_clients", "clients")),
            ts("Redis round trip p95 (from sluice)", q(p95("sluice_redis_ping_seconds"), "PING p95"), unit="s"),
        ],
    },
}

VARIABLES = {
    "pool": {"name": "pool", "label": "pool", "type": "query", "query": "label_values(sluice_worker_info, pool)",
             "includeAll": True, "multi": True, "allValue": ".*"},
    "job_id": {"name": "job_id", "label": "training job", "type": "query",
               "query": "label_values(sluice_training_step, job_id)", "includeAll": True, "multi": True, "allValue": ".*"},
}


def dashboard(uid, spec):
    panels, x, y, row_height = [], 0, 0, 0
    for i, p in enumerate(spec["panels"]):
        height = 4 if p["type"] == "stat" else 8
        if x + p["width"] > 24:
            x, y = 0, y + row_height
            row_height = 0
        panel = {
            "id": i + 1,
            "type": p["type"],
            "title": p["title"],
            "description": p["description"],
            "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": p["width"], "h": height},
            "fieldConfig": {"defaults": {"unit": p["unit"]}, "overrides": []},
            "targets": [
                {"refId": chr(ord("A") + j), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                for j, (expr, legend) in enumerate(p["targets"])
            ],
        }
        if p["type"] == "timeseries":
            panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}}
            if p["stack"]:
                panel["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal"}}
        else:
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
        panels.append(panel)
        x += p["width"]
        row_height = max(row_height, height)
    variables = [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "data source"}]
    for name in spec["variables"]:
        v = dict(VARIABLES[name])
        v.update({"datasource": DATASOURCE, "refresh": 2, "current": {"text": "All", "value": "$__all"}})
        variables.append(v)
    return {
        "uid": uid,
        "title": spec["title"],
        "description": spec["description"],
        "tags": ["sluice"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


def main():
    check = "--check" in sys.argv[1:]
    OUT.mkdir(exist_ok=True)
    stale = []
    for uid, spec in DASHBOARDS.items():
        text = json.dumps(dashboard(uid, spec), indent=2, ensure_ascii=False) + "\n"
        path = OUT / f"{uid}.json"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        sys.exit(f"stale dashboards (run python3 dashboards/build.py): {', '.join(stale)}")


if __name__ == "__main__":
    main()
