"""An s3:// artifact store location, parsed: by the settings that check it and the store that uses it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True, slots=True)
class S3Location:
    """`s3://bucket/prefix?endpoint=http://host:port&region=...`; credentials come from the AWS variables."""

    bucket: str
    prefix: str
    endpoint: str | None
    region: str | None

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("expected s3://bucket[/prefix][?endpoint=URL&region=NAME]")
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise ValueError(f"unknown parameters {', '.join(sorted(unknown))}; s3:// URLs take endpoint and region")
        endpoint = query.get("endpoint")
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ValueError("endpoint must be an http:// or https:// URL")
        return cls(parts.netloc, parts.path.strip("/"), endpoint, query.get("region"))
