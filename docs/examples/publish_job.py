#!/usr/bin/env python3
"""Submit a sluice job over AMQP, the way an upstream system would (needs `pika`).

    publish_job.py SPEC --message-id ID [--url AMQP_URL] [--prefix sluice] [--wait SECONDS]

SPEC is a job spec file (.json, or .toml converted to JSON here): the same spec the HTTP
API takes. The message goes to the exchange `<prefix>.submissions` with routing key
`submit`, persistent, with publisher confirms. `message_id` is the idempotency key: send the
same submission again with the same id (after a timeout, a crash, a retry) and it is still
one job. With --wait, replies come to an exclusive queue named in `reply_to`: first
`accepted` (or `duplicate`, or `rejected` with the reason), later `finished` with the final
status. Each reply is printed as one JSON line; the exit status is 0 only when the job
succeeded (or, without --wait, when the broker confirmed the message).
"""

import argparse
import json
import sys
import time
import tomllib
import uuid

import pika


def load_spec(path):
    with open(path, "rb") as f:
        if path.endswith(".json"):
            return json.load(f)
        return tomllib.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--message-id", required=True, help="idempotency key of this submission")
    parser.add_argument("--correlation-id", default=None)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--prefix", default="sluice")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for the final reply")
    args = parser.parse_args()

    body = json.dumps(load_spec(args.spec)).encode()
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.confirm_delivery()
    reply_to = None
    if args.wait > 0:
        reply_to = channel.queue_declare(queue="", exclusive=True).method.queue
    properties = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=args.message_id,
        correlation_id=args.correlation_id or str(uuid.uuid4()),
        reply_to=reply_to,
    )
    # mandatory: an unroutable message (wrong prefix, topology not declared) is an error,
    # not a silent drop.
    channel.basic_publish(
        exchange=f"{args.prefix}.submissions",
        routing_key="submit",
        body=body,
        properties=properties,
        mandatory=True,
    )
    print(json.dumps({"published": args.message_id}), flush=True)
    if reply_to is None:
        connection.close()
        return 0

    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        method, props, reply = channel.basic_get(reply_to, auto_ack=True)
        if method is None:
            connection.process_data_events(time_limit=0.2)
            continue
        message = json.loads(reply)
        message["correlation_id"] = props.correlation_id
        print(json.dumps(message), flush=True)
        if message["outcome"] == "rejected":
            return 2
        if message["outcome"] == "finished":
            return 0 if message.get("status") == "succeeded" else 1
    print(json.dumps({"error": f"no final reply within {args.wait} s"}), file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
