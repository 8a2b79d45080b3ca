#!/usr/bin/env python3
"""Makes S3 buckets if they are missing (compose's `init` step where minio/mc cannot be had);
with no bucket, only checks that the server answers (the `minio` service's health check).

    s3-mb.py [BUCKET...]   (S3_ENDPOINT, default http://localhost:9000; AWS_ACCESS_KEY_ID,
                            AWS_SECRET_ACCESS_KEY from the environment)
"""
import os
import sys

import boto3


def main(buckets):
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ.get("S3_ENDPOINT", "http://localhost:9000"),
        region_name="us-east-1",
        # moto takes any key; these only let boto3 sign the health check's request.
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "health"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "health"),
    )
    if not buckets:
        s3.list_buckets()
        return
    for bucket in buckets:
        try:
            s3.create_bucket(Bucket=bucket)
            print(f"made s3://{bucket}")
        except s3.exceptions.BucketAlreadyOwnedByYou:
            print(f"s3://{bucket} exists")


if __name__ == "__main__":
    main(sys.argv[1:])
