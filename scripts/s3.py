#!/usr/bin/env python3
"""Minimal S3 client for the scripts (boto3 from the services venv), against the local
S3 server unless S3_ENDPOINT says otherwise.

  s3.py mb BUCKET | put FILE s3://b/k | get s3://b/k FILE | cat s3://b/k | ls s3://b/prefix
"""
import os
import sys

import boto3


def split(uri: str):
    assert uri.startswith("s3://"), uri
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def main() -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ.get("S3_ENDPOINT", "http://127.0.0.1:9000"),
        region_name="us-east-1",
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "sluice"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "sluice-secret"),
    )
    command, *args = sys.argv[1:]
    if command == "mb":
        try:
            s3.create_bucket(Bucket=args[0])
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    elif command == "put":
        bucket, key = split(args[1])
        s3.upload_file(args[0], bucket, key)
    elif command == "get":
        bucket, key = split(args[0])
        s3.download_file(bucket, key, args[1])
    elif command == "cat":
        bucket, key = split(args[0])
        sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    elif command == "ls":
        bucket, prefix = split(args[0])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                print(f"{obj['Size']:>12}  s3://{bucket}/{obj['Key']}")
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
