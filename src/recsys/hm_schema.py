"""Column names and types of the H&M Personalized Fashion Recommendations CSVs."""

from __future__ import annotations

from typing import Final

import pyarrow as pa

ARTICLES_FILE: Final = "articles.csv"
CUSTOMERS_FILE: Final = "customers.csv"
TRANSACTIONS_FILE: Final = "transactions_train.csv"

# Every id is a string: article_id keeps its leading zero, customer_id is 64 hex chars.
ARTICLES_SCHEMA: Final = pa.schema(
    [
        ("article_id", pa.string()),
        ("product_code", pa.int64()),
        ("prod_name", pa.string()),
        ("product_type_no", pa.int64()),
        ("product_type_name", pa.string()),
        ("product_group_name", pa.string()),
        ("graphical_appearance_no", pa.int64()),
        ("graphical_appearance_name", pa.string()),
        ("colour_group_code", pa.int64()),
        ("colour_group_name", pa.string()),
        ("perceived_colour_value_id", pa.int64()),
        ("perceived_colour_value_name", pa.string()),
        ("perceived_colour_master_id", pa.int64()),
        ("perceived_colour_master_name", pa.string()),
        ("department_no", pa.int64()),
        ("department_name", pa.string()),
        ("index_code", pa.string()),
        ("index_name", pa.string()),
        ("index_group_no", pa.int64()),
        ("index_group_name", pa.string()),
        ("section_no", pa.int64()),
        ("section_name", pa.string()),
        ("garment_group_no", pa.int64()),
        ("garment_group_name", pa.string()),
        ("detail_desc", pa.string()),
    ]
)

# FN, Active and age may be empty in the real file, so they are nullable floats there.
CUSTOMERS_SCHEMA: Final = pa.schema(
    [
        ("customer_id", pa.string()),
        ("FN", pa.float64()),
        ("Active", pa.float64()),
        ("club_member_status", pa.string()),
        ("fashion_news_frequency", pa.string()),
        ("age", pa.float64()),
        ("postal_code", pa.string()),
    ]
)

# t_dat is read as a string and parsed by the ingest step, which counts bad dates.
TRANSACTIONS_SCHEMA: Final = pa.schema(
    [
        ("t_dat", pa.string()),
        ("customer_id", pa.string()),
        ("article_id", pa.string()),
        ("price", pa.float64()),
        ("sales_channel_id", pa.int64()),
    ]
)

SCHEMAS: Final = {
    ARTICLES_FILE: ARTICLES_SCHEMA,
    CUSTOMERS_FILE: CUSTOMERS_SCHEMA,
    TRANSACTIONS_FILE: TRANSACTIONS_SCHEMA,
}

# The article fields that travel with every recommended item as its metadata.
ARTICLE_METADATA_FIELDS: Final = (
    "prod_name",
    "product_type_name",
    "product_group_name",
    "graphical_appearance_name",
    "colour_group_name",
    "perceived_colour_master_name",
    "department_name",
    "index_name",
    "index_group_name",
    "section_name",
    "garment_group_name",
)

# The categorical fields an item's metadata carries (prod_name is a name, not a category)
# and the colour's perceived value.
CATEGORICAL_FIELDS: Final = (
    *(f for f in ARTICLE_METADATA_FIELDS if f != "prod_name"),
    "perceived_colour_value_name",
)
TEXT_FIELD: Final = "detail_desc"
CONTENT_FIELDS: Final = (*CATEGORICAL_FIELDS, TEXT_FIELD)
