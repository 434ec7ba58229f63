"""Every knob of the stack, read once from the environment (RECSYS_*) and `.env`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from recsys.api_keys import ApiKey, duplicate_field
from recsys.blend import TrendingSource

# The settings the batch's search may choose (RECSYS_TUNING_SPACE names them).
TUNABLE_SETTINGS = (
    "implicit_factors",
    "implicit_iterations",
    "implicit_regularization",
    "implicit_alpha",
    "implicit_regularization_exponent",
    "spark_als_rank",
    "spark_als_max_iter",
    "spark_als_reg_param",
    "spark_als_alpha",
    "interaction_half_life_days",
)

Rate = Annotated[float, Field(gt=0.0, le=1.0)]
# How every process writes its log lines (recsys.logs).
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Configuration of every command. An engine whose URL is unset is embedded."""

    model_config = SettingsConfigDict(
        env_prefix="RECSYS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where embedded engines, Delta tables, models and run files live.
    data_dir: Path = Path("data")

    # Engines. None means: find the embedded one through the run file, or start it.
    redis_url: str | None = None
    # A Redis or Valkey Cluster: redis_url names any of its nodes (docs/scaling.md).
    redis_cluster: bool = False
    kafka_bootstrap_servers: str | None = None
    # TLS to Redis (a `rediss://` URL; an ACL user and password come in it:
    # rediss://user:password@host:port/db): the CA that signed the server's certificate
    # (unset: the system's), and this client's certificate and key where the server asks
    # for one. Carried to every client in the URL as redis-py's own parameters.
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    # Security of every Kafka client (docs/security.md): SASL needs a username and
    # password, SSL verifies the brokers against the CA (unset: the system's) and sends
    # the client certificate where one is set.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    # A Qdrant server (http://host:6333), or ":memory:" for qdrant-client's in-process
    # local mode (tests). Unset: the embedded Qdrant Edge engine.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    # Each version is the collection <prefix>_<version>; the alias <prefix> is the live one.
    qdrant_collection: str = "recsys_items"
    qdrant_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    # A Qdrant cluster (recsys.index.qdrant_server.Cluster): the shards of each version's
    # collection (unset: the server's choice, one per node at creation), the copies of each
    # shard, and how many of them must apply a write before it succeeds (at most the
    # copies). Fixed when the batch creates a version.
    qdrant_shard_number: Annotated[int, Field(ge=1)] | None = None
    qdrant_replication_factor: Annotated[int, Field(ge=1)] = 1
    qdrant_write_consistency_factor: Annotated[int, Field(ge=1)] = 1
    # Replicas a query or lookup consults: 1 answers from any (fastest, Qdrant's default);
    # majority, quorum or all agree across replicas at the cost of latency.
    qdrant_read_consistency: Annotated[int, Field(ge=1)] | Literal["majority", "quorum", "all"] = 1
    # The recall@10 against exact search the batch holds each version's HNSW beams to
    # (unfiltered, and filtered in the worst product group): recsys.index.beams.
    index_recall_target: Annotated[float, Field(gt=0, le=1)] = 0.95
    spark_master: str = "local[*]"

    # Kafka topics and consumer behaviour (group joins in seconds, fetches in ms).
    events_topic: str = "events"
    dlq_topic: str = "events.dlq"
    events_partitions: Annotated[int, Field(ge=1)] = 2
    # Copies of each partition of the topics a command creates, and how many of them must
    # hold a write before the broker acknowledges it (the producers ask acks=all): 3 and
    # 2 on a production cluster. The embedded broker is one node in memory: 1 only.
    kafka_replication_factor: Annotated[int, Field(ge=1)] = 1
    kafka_min_insync_replicas: Annotated[int, Field(ge=1)] = 1
    updater_group: str = "recsys-updater"
    kafka_session_timeout_ms: Annotated[int, Field(ge=1000)] = 6000
    kafka_heartbeat_interval_ms: Annotated[int, Field(ge=100)] = 500
    kafka_fetch_wait_max_ms: Annotated[int, Field(ge=0)] = 5
    kafka_produce_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # At most this many events per Redis round trip (2000: 14.6k events/s, 500: 10.4k).
    updater_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 2_000
    # Per customer and live version, the updater remembers the ids of this many latest
    # events above a floor of broker time (recsys/apply.py): a redelivery, a broker that
    # restarted its offsets, a customer moved to another partition or a replay never
    # applies an event twice, and Redis holds ~16 bytes per remembered event.
    applied_events_kept: Annotated[int, Field(ge=1, le=1_000)] = 16
    # Where `recsys updater` serves its Prometheus metrics (port 0: not served).
    updater_metrics_host: str = "127.0.0.1"
    updater_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9101
    drain_timeout_s: Annotated[float, Field(ge=0)] = 15.0
    archiver_group: str = "recsys-archiver"
    # Where `recsys archiver` serves its Prometheus metrics (port 0: not served).
    archiver_metrics_host: str = "127.0.0.1"
    archiver_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9102
    # One Delta commit per batch: larger batches, fewer small files; the interval bounds
    # how stale the table can be under low traffic.
    archiver_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5_000
    archiver_flush_interval_s: Annotated[float, Field(gt=0)] = 2.0
    # How often the archiver rewrites the events table's closed days into few files
    # (each flush leaves one small file); the merge of a flush reads only its own days.
    archiver_compact_interval_s: Annotated[float, Field(gt=0)] = 3600.0
    # New and changed articles (POST /items, `recsys catalog upsert`), keyed by article_id:
    # every serving process applies them to its index copy, the archiver to the Delta
    # `items` table the next batch reads (docs/catalog.md).
    catalog_topic: str = "catalog"

    # Which ALS trains the model. Each trainer has its own parameters: the same numbers
    # mean different models (implicit's confidence is alpha*x, Spark's 1+alpha*r, and
    # Spark scales regularisation by counts).
    trainer: Literal["implicit", "spark"] = "implicit"
    als_seed: int = 7
    # Defaults chosen by `recsys evaluate` on validation splits of H&M-schema purchases
    # with the 90-day decay below (docs/evaluation.md).
    implicit_factors: Annotated[int, Field(ge=2, le=1024)] = 32
    implicit_iterations: Annotated[int, Field(ge=1, le=200)] = 15
    implicit_regularization: Annotated[float, Field(ge=0)] = 1.0
    # Confidence per interaction of the mean weight (batch.implicit_trainer.per_mean_
    # weight): 5.6 is the former 20 per decayed purchase day at the 90-day half-life
    # over two years of H&M-shaped purchases (mean weight 0.28), where the full shape
    # was measured.
    implicit_alpha: Annotated[float, Field(gt=0)] = 5.6
    # Each user and item regularised by implicit_regularization * (its interaction count)
    # ** this: 0 is implicit's own (one for all), 1 Spark's ALS-WR.
    implicit_regularization_exponent: Annotated[float, Field(ge=0, le=2)] = 0.0
    spark_als_rank: Annotated[int, Field(ge=2, le=1024)] = 32
    spark_als_max_iter: Annotated[int, Field(ge=1, le=200)] = 10
    spark_als_reg_param: Annotated[float, Field(ge=0)] = 0.2
    spark_als_alpha: Annotated[float, Field(gt=0)] = 10.0
    # The driver's heap; with local[*] the executors run inside it (docs/scale.md).
    spark_driver_memory: str = "4g"
    spark_executor_memory: str | None = None  # on a cluster; unset: Spark's default
    spark_shuffle_partitions: Annotated[int, Field(ge=1)] = 8
    # Any other Spark property, as JSON ({"spark.driver.maxResultSize": "2g"}); applied
    # last, so it overrides the settings above.
    spark_conf: Annotated[dict[str, str], NoDecode] = {}
    # Who writes the Delta tables. "deltalake": Spark writes the Parquet files and
    # delta-rs commits them (no jars needed; the lake must be a filesystem the driver
    # and executors share). "delta-spark": Delta's own Spark writer, whose jars Spark
    # fetches from Maven (install the `delta-spark` extra).
    lake_writer: Literal["deltalake", "delta-spark"] = "deltalake"
    # Files an overwrite replaced are deleted this long after (time travel until then).
    lake_retention_hours: Annotated[float, Field(ge=0)] = 168.0
    # Tables with a customer_id column are written sorted by it in files of at most this
    # many rows (~50 MB of interactions), so an erasure rewrites one file per table.
    lake_file_rows: Annotated[int, Field(ge=100)] = 1_000_000

    # Interaction weights decay by half every this many days (0: no decay). 90 is the
    # validation choice on H&M-schema purchases (docs/evaluation.md).
    interaction_half_life_days: Annotated[float, Field(ge=0)] = 90.0

    # The batch tunes the trainer's parameters and the decay on a validation split carved
    # from the holdout's training part (batch.tuning, docs/evaluation.md "Tuning"); the
    # settings above are the first trial, so the choice is never worse on validation.
    tuning: bool = True
    # Seconds the trials may take (a trial started in time finishes; the split's Spark jobs
    # come on top); unset: twelve times the first trial, 30 s to 360 s, so it grows with
    # the data.
    tuning_budget_s: Annotated[float, Field(gt=0)] | None = None
    tuning_max_trials: Annotated[int, Field(ge=1, le=500)] = 60
    # Past this many purchases the search runs on a seeded sample of customers holding
    # about this many (their whole histories), so a trial at the real data set's shape
    # costs a sixth of a fit on it and the budget buys a dozen trials, not three.
    tuning_sample_purchases: Annotated[int, Field(ge=1_000)] | None = 5_000_000
    # Choices replacing the default search space of the named settings, as JSON:
    # {"interaction_half_life_days": [0, 30], "implicit_factors": [32, 64]}.
    tuning_space: Annotated[dict[str, list[float]], NoDecode] = {}

    # A new version whose holdout NDCG@10 is below the live one's by more than this is
    # left a candidate (promote it by hand, or run the batch with --force).
    promotion_max_ndcg_drop: Annotated[float, Field(ge=0, le=1)] = 0.02
    # Measure each new version on a temporal holdout (one more fit) before promoting it.
    evaluate_before_promotion: bool = True
    # Customers the holdout judges (a seeded sample), so its driver memory stays flat at
    # any data size (docs/scale.md).
    holdout_customers: Annotated[int, Field(ge=100)] = 20_000
    # After each batch run, older versions are deleted (Redis keys and files) except the
    # live one, newer candidates and this many that rollback can return to.
    model_versions_kept: Annotated[int, Field(ge=0)] = 2
    prune_after_batch: bool = True

    # Cold start (batch.content_vectors, docs/cold_start.md): articles in the catalogue
    # nobody has bought get a vector mapped from their metadata into the ALS space, flagged
    # `placed_by: content` in the index. False leaves them out of the index.
    content_placement: bool = True

    # Online learning: the share of the way a user vector moves toward a bought item,
    # with the item scaled to the user's norm (see recsys/ema.py). 0.3 is the replay's
    # best on ml-100k and within 1% of the best on the generator (docs/evaluation.md).
    ema_rate: Rate = 0.3
    # How an event moves the vector: "ema" steps toward the item at ema_rate; "fold_in"
    # recomputes the least-squares vector of implicit ALS from the purchase history
    # (recsys/fold_in.py; versions trained by Spark MLlib keep the EMA); "auto": the
    # update the batch chose for the version on a replay of its holdout, among EMA rates
    # and fold-in's forms (batch/online_update.py; the settings' EMA when it chose none).
    # auto: the data sets disagree on the best update (docs/evaluation.md, "Results").
    online_update: Literal["auto", "ema", "fold_in"] = "auto"
    # Customers of the holdout's judged sample whose held-out purchases the batch replays
    # to choose the update under "auto": cost and noise both grow and shrink with it.
    online_update_customers: Annotated[int, Field(ge=10)] = 2_000
    # Fold-in's online form (recsys/fold_in.py, Recency): each history item's confidence
    # also halves every this many purchases since (the event applied is age 0; 0: not
    # weighed), then the vector steps this share of the way toward the event's item as
    # the EMA does (0: no step). h 8 wherever the replay chooses fold-in (ml-100k, two of
    # four shops); step 0 on both those shops (0.2 on ml-100k); the pair is above the EMA
    # at 0.3 on all five validation replays (docs/evaluation.md, "Results").
    fold_in_half_life_events: Annotated[float, Field(ge=0)] = 8.0
    fold_in_step: Annotated[float, Field(ge=0, le=1)] = 0.0
    # Weaker signals (POST /events/{view,click,add_to_cart}): what each counts next to a
    # purchase (1), as a share of the EMA rate and as a day's weight in training; 0 ignores
    # the type. Only purchases are history (exclusions, profile counts). Defaults: the
    # weak-signal replay's choice on generated data, the same on two seeds; re-measure on
    # your own (docs/evaluation.md, "Weaker signals").
    event_weight_view: Annotated[float, Field(ge=0, le=1)] = 0.5
    event_weight_click: Annotated[float, Field(ge=0, le=1)] = 1.0
    event_weight_add_to_cart: Annotated[float, Field(ge=0, le=1)] = 1.0

    # Serving.
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=0, le=65535)] = 8000
    # Server processes sharing the port. Each loads its own copy of the served index
    # (~300 MB at 100k items); two on two cores about double throughput.
    api_workers: Annotated[int, Field(ge=1, le=64)] = 1
    # MMR trade-off when a request names none: 1 is pure relevance, 0 pure diversity.
    # 1: on H&M-schema data any MMR cost >= 15% NDCG@10 (docs/evaluation.md).
    diversity_lambda: Annotated[float, Field(ge=0, le=1)] = 1.0
    # Never recommend back what the customer bought. Fashion customers rebuy (on H&M's
    # last week, allowing it changes MAP@12: `recsys evaluate --protocol hm-week`).
    exclude_purchased: bool = True
    # A customer with a vector and at most blend_max_purchases distinct purchases gets
    # the vector's scores blended with trending's (recsys/blend.py): weight 0 is the
    # vector alone (no blend), 1 trending alone; "group" takes trending within the
    # product groups they bought from. Requests with MMR keep the vector alone. Defaults:
    # `recsys evaluate --protocol few-purchases` on four generated shops (group trending
    # at 0.8: 1.45x the vector's NDCG@10 on validation, the best weight 1.47x; overall at
    # its best 1.36x), docs/evaluation.md "Customers with one or two purchases".
    blend_max_purchases: Annotated[int, Field(ge=0)] = 2
    blend_trending_weight: Annotated[float, Field(ge=0, le=1)] = 0.8
    blend_trending: TrendingSource = "group"
    redis_timeout_s: Annotated[float, Field(gt=0)] = 0.5
    model_poll_interval_s: Annotated[float, Field(gt=0)] = 1.0
    history_max_items: Annotated[int, Field(ge=1)] = 200
    # A customer's history and last-event keys expire this long after they were last
    # written (every batch run rewrites the histories it trains on, every event both), so
    # customers who leave stop holding memory; 0 keeps them for ever.
    customer_state_retention_days: Annotated[float, Field(ge=0)] = 365.0
    trending_half_life_days: Annotated[float, Field(gt=0)] = 7.0
    trending_size: Annotated[int, Field(ge=10)] = 500
    trending_segment_size: Annotated[int, Field(ge=10)] = 100  # per product group and type

    # Access and limits of the API (serve.access, docs/security.md). Keys as JSON
    # [{"name", "role": "events"|"read"|"admin"|"metrics", "sha256", "expires"?}]: only
    # each key's hash is held (`recsys keys new`). Customers' data (profiles, explanations,
    # the page's customer list) always needs a key granting read; writes need their role.
    api_keys: Annotated[list[ApiKey], NoDecode] = []
    # More keys, in a JSON file of the same entries that the API re-reads when it changes:
    # keys are added and removed (rotated) without a restart. Checked every
    # api_keys_reload_interval_s on a background task, never per request.
    api_keys_file: Path | None = None
    api_keys_reload_interval_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    # A key expiring within this many days is logged as a warning (and every key's expiry
    # is exported as api_key_expiry_timestamp_seconds for an alert).
    api_keys_expiry_warning_days: Annotated[float, Field(ge=0)] = 14.0
    # /metrics needs a key granting metrics (the metrics role, or admin): the page of
    # counters names routes, experiments and load. Off: open to anyone who can connect.
    metrics_require_key: bool = True
    # /metrics reads the experiments' counters from Redis at most once per this many
    # seconds in each process, however often it is scraped (0: at every scrape).
    metrics_cache_s: Annotated[float, Field(ge=0, le=300)] = 5.0
    # One API replica exports the experiments' totals, holding a lease this long after
    # its last scrape (observability.experiment_metrics); 0: every replica exports them.
    metrics_export_lease_s: Annotated[float, Field(ge=0)] = 60.0
    # Every route open to anyone, unchecked: the test suite and the benchmarks only.
    auth_disabled: bool = False
    # Requests without a key may post events and administer (not read customers' data):
    # local development, set by `recsys up` and `recsys demo` on loopback with no key.
    open_writes: bool = False
    # The public reads (/recommend without explanations, similar items, /popular, /models,
    # /experiments) need a key of any role too; off, they are open to anyone.
    public_reads_require_key: bool = False
    # Requests per second and burst of each key, by its role (0: unlimited), counted in
    # Redis so every worker process shares them; without a key, per client address.
    rate_limit_events_per_s: Annotated[float, Field(ge=0)] = 1000.0
    rate_limit_events_burst: Annotated[int, Field(ge=1)] = 2000
    # A read key is a shop's server or a support tool; the limit bounds how fast a leaked
    # one can copy profiles (100/s: a million customers take ~3 h, and alerts fire first).
    rate_limit_read_per_s: Annotated[float, Field(ge=0)] = 100.0
    rate_limit_read_burst: Annotated[int, Field(ge=1)] = 200
    rate_limit_admin_per_s: Annotated[float, Field(ge=0)] = 5.0
    rate_limit_admin_burst: Annotated[int, Field(ge=1)] = 20
    # A Prometheus scrapes every few seconds; two replicas share a key at most.
    rate_limit_metrics_per_s: Annotated[float, Field(ge=0)] = 2.0
    rate_limit_metrics_burst: Annotated[int, Field(ge=1)] = 10
    # A shop page view makes 2-5 calls (recommendations, a similar-items strip, trending);
    # a person opens at most a page or two a second, and a few share one address behind a
    # NAT: 20/s sustained with a burst of 60 (a dozen tabs at once) never slows them, and
    # holds one address to 20 recorded impressions a second. Servers calling on behalf of
    # many people send a key (counted against its role's limit).
    rate_limit_anonymous_per_s: Annotated[float, Field(ge=0)] = 20.0
    rate_limit_anonymous_burst: Annotated[int, Field(ge=1)] = 60
    # Largest request body (413 above): 1000 catalogue articles fit in ~0.5 MiB.
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024

    # A/B experiments (recsys.experiments, docs/experiments.md). The file defining them
    # (JSON or YAML); unset: no experiment runs.
    experiments_file: Path | None = None
    # A purchase is credited to a recommendation shown at most this long before it; the
    # ledger keeps each impression this long (~370 B each at k=10, measured).
    attribution_window_s: Annotated[int, Field(ge=60, le=30 * 86_400)] = 86_400

    # Tracing: OTLP over HTTP to this endpoint (Jaeger: http://localhost:4318), else to
    # the console when asked, else nowhere.
    otlp_endpoint: str | None = None
    trace_to_console: bool = False
    # Log lines as text (for a terminal) or one JSON object each (for a log collector);
    # either way they carry the trace id of the span current when there is one.
    log_format: LogFormat = "text"

    # Engines start-up.
    # An embedded Valkey holding the H&M data set's customers (1.4 GiB) loads its
    # append-only file in ~20 s on 2 cores (docs/scale.md).
    engine_start_timeout_s: Annotated[float, Field(gt=0)] = 60.0

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_from_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else []
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON ({exc.msg} at character {exc.pos})") from None
        return value

    @field_validator("spark_conf", "tuning_space", mode="before")
    @classmethod
    def _dict_from_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON ({exc.msg} at character {exc.pos})") from None
        return value

    @field_validator("spark_conf")
    @classmethod
    def _spark_keys_only(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key.startswith("spark."):
                raise ValueError(f"{key!r} is not a Spark property (they start with 'spark.')")
        return value

    @field_validator("tuning_space")
    @classmethod
    def _tunable_only(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for key, choices in value.items():
            if key not in TUNABLE_SETTINGS:
                raise ValueError(f"{key!r} is not tunable (one of {', '.join(TUNABLE_SETTINGS)})")
            if not choices:
                raise ValueError(f"{key!r} has no choices")
        return value

    @field_validator("api_keys")
    @classmethod
    def _each_key_once(cls, value: list[ApiKey]) -> list[ApiKey]:
        if (field := duplicate_field(value)) is not None:
            raise ValueError(f"two keys have the same {field}")
        return value

    @field_validator("qdrant_write_consistency_factor")
    @classmethod
    def _writes_within_replicas(cls, value: int, info: ValidationInfo) -> int:
        # More than the copies there are: every write would wait for replicas that do not
        # exist, and fail.
        replicas = info.data.get("qdrant_replication_factor")
        if replicas is not None and value > replicas:
            raise ValueError(f"must be at most RECSYS_QDRANT_REPLICATION_FACTOR ({replicas})")
        return value

    @field_validator("api_host")
    @classmethod
    def _loopback_only_by_default(cls, value: str) -> str:
        # Listening on every interface is a deliberate choice, never a typo.
        if value not in {"127.0.0.1", "localhost", "::1", "0.0.0.0"}:
            raise ValueError("api_host must be 127.0.0.1, localhost, ::1 or 0.0.0.0")
        return value

    @model_validator(mode="after")
    def _redis_tls_in_url(self) -> Self:
        files = {
            "ssl_ca_certs": self.redis_tls_ca_file,
            "ssl_certfile": self.redis_tls_cert_file,
            "ssl_keyfile": self.redis_tls_key_file,
        }
        if (self.redis_tls_cert_file is None) != (self.redis_tls_key_file is None):
            raise ValueError("redis_tls_cert_file and redis_tls_key_file go together")
        if not any(files.values()) or self.redis_url is None:
            return self  # an embedded Valkey (no URL) speaks no TLS: nothing to carry
        parts = urlsplit(self.redis_url)
        if parts.scheme != "rediss":
            raise ValueError("redis_tls_* files need a rediss:// redis_url")
        # redis-py reads these from the URL, and so does recsys.multiplexed_redis: every
        # client made from the URL (in any process it is handed to) uses the same files.
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        for name, path in files.items():
            if path is not None:
                query.setdefault(name, str(path))
        self.redis_url = urlunsplit(parts._replace(query=urlencode(query, safe="/")))
        return self

    @model_validator(mode="after")
    def _cluster_named(self) -> Self:
        # The embedded Valkey is one server: a cluster is always the user's own.
        if self.redis_cluster and self.redis_url is None:
            raise ValueError(
                "redis_cluster needs redis_url naming a node of the cluster "
                "(the embedded Valkey is a single server)"
            )
        return self

    @model_validator(mode="after")
    def _kafka_replicas_possible(self) -> Self:
        # More in sync than there are copies: every acks=all write would be refused.
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(
                f"kafka_min_insync_replicas ({self.kafka_min_insync_replicas}) must be at "
                f"most kafka_replication_factor ({self.kafka_replication_factor})"
            )
        # No brokers named: the embedded one, a single node that would accept more copies
        # and keep one (in memory): refused rather than promise what it cannot hold.
        if self.kafka_bootstrap_servers is None and self.kafka_replication_factor > 1:
            raise ValueError(
                f"kafka_replication_factor {self.kafka_replication_factor} needs a Kafka "
                "cluster (kafka_bootstrap_servers): the embedded broker is one node and "
                "keeps one copy, in memory"
            )
        return self

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Self:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        tls = self.kafka_security_protocol.endswith("SSL")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs "
                "kafka_sasl_username and kafka_sasl_password"
            )
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError(
                "kafka_sasl_username/password are set but kafka_security_protocol "
                f"{self.kafka_security_protocol} sends no SASL: use SASL_SSL or SASL_PLAINTEXT"
            )
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise ValueError("kafka_ssl_cert_file and kafka_ssl_key_file go together")
        has_files = self.kafka_ssl_ca_file or self.kafka_ssl_cert_file
        if has_files and not tls:
            raise ValueError(
                "kafka_ssl_* files are set but kafka_security_protocol "
                f"{self.kafka_security_protocol} uses no TLS: use SSL or SASL_SSL"
            )
        return self

    @property
    def customer_state_ttl_s(self) -> int:
        """customer_state_retention_days in seconds (0: no expiry)."""
        return int(self.customer_state_retention_days * 86_400)

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def scratch_dir(self) -> Path:
        """Where Spark results larger than its collect limit are spilled for the driver
        to stream back (under the lake: a filesystem driver and executors share)."""
        return self.lake_dir / "_scratch"

    @property
    def events_table(self) -> Path:
        """The Delta table of accepted events, written by the archiver, read by the batch."""
        return self.lake_dir / "bronze" / "events"

    @property
    def items_table(self) -> Path:
        """The Delta table of articles that came through the catalog topic."""
        return items_table_in(self.lake_dir)

    @property
    def availability_table(self) -> Path:
        """The Delta table of the catalog topic's availabilities (recsys.availability)."""
        return availability_table_in(self.lake_dir)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"


def items_table_in(lake_dir: Path) -> Path:
    """Where the archiver writes the catalog topic's articles and the batch reads them."""
    return lake_dir / "bronze" / "items"


def availability_table_in(lake_dir: Path) -> Path:
    """Where the archiver writes the catalog topic's availabilities and the batch reads
    them."""
    return lake_dir / "bronze" / "availability"
