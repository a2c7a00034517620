"""The canonical ``enterprises`` table: one row per enterprise of the business registry (§3).

Both vendor variants land here. What only one variant reports is null for the other, never guessed:
variant A has the capital and the members but only the representatives' names; variant B has the
representatives' ID papers and the suspension dates but no capital or members. A list column is
null when the variant does not report it at all and empty when it reports none.

Money is ``decimal128(22, 2)``, not float64: registered capital reaches 10¹³ VND and beyond, amounts
are compared for equality across runs and summed in DuckDB, and a float would round them silently.
Two decimals leave room for a gateway that sends fractional amounts; 20 integer digits are ample.

The latest row of an enterprise is the one with the greatest ``last_dossier_processed_on`` (the
latest dossier the registry listed for it when its details were fetched); ties go to the row fetched
last, which is the fresher copy of the same state.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.canonical import with_provenance

DATASET = "enterprises"
VERSION = 1
KEY = ("enterprise_code",)
VERSION_COLUMN = "last_dossier_processed_on"

MONEY = pa.decimal128(22, 2)

ACTIVITY = pa.struct([
    pa.field("code", pa.string()),  # VSIC code
    pa.field("name", pa.string()),
    pa.field("is_main", pa.bool_()),
])
MEMBER = pa.struct([
    pa.field("name", pa.string()),
    pa.field("amount", MONEY),  # contributed capital, VND
    pa.field("ratio", pa.float64()),  # share of the capital, percent (display only, hence float)
    pa.field("country", pa.string()),
])
REPRESENTATIVE = pa.struct([
    pa.field("name", pa.string()),
    pa.field("id_type", pa.string()),  # MaLoaiGiayToChungThuc: 1 personal ID, 2 CMND (variant B only)
    pa.field("id_number", pa.string()),
    pa.field("issued_on", pa.date32()),
    pa.field("issued_by", pa.string()),
    pa.field("nationality", pa.string()),  # ISO 3166 alpha-2 when the wire gives the code
])

FIELDS = [
    pa.field("enterprise_code", pa.string(), nullable=False),  # mã số doanh nghiệp (10 digits, -NNN for a branch)
    pa.field("enterprise_id", pa.int64()),  # the registry's internal id (ENTERPRISE_ID / MaNoiBo)
    pa.field("gdt_code", pa.string()),  # tax code (ENTERPRISE_GDT_CODE)
    pa.field("old_registration_code", pa.string()),  # pre-2010 registration number, when it differs
    pa.field("type_code", pa.string()),
    pa.field("type_name", pa.string()),
    pa.field("name", pa.string(), nullable=False),
    pa.field("name_foreign", pa.string()),
    pa.field("name_short", pa.string()),
    pa.field("founding_date", pa.date32()),
    pa.field("last_amendment_date", pa.date32()),
    pa.field("number_of_changes", pa.int32()),
    pa.field("status_code", pa.string(), nullable=False),  # 01..06 (§3)
    pa.field("status_name", pa.string()),
    pa.field("suspended_from", pa.date32()),  # variant B only
    pa.field("suspended_until", pa.date32()),
    pa.field("suspension_reason", pa.string()),
    pa.field("capital", MONEY),  # variant A only
    pa.field("hq_province_code", pa.string()),
    pa.field("hq_province_name", pa.string()),
    pa.field("hq_district_code", pa.string()),  # empty under the 2025 two-level codes
    pa.field("hq_district_name", pa.string()),
    pa.field("hq_ward_code", pa.string()),
    pa.field("hq_ward_name", pa.string()),
    pa.field("hq_street", pa.string()),
    pa.field("hq_address", pa.string()),  # the full text as the registry writes it
    pa.field("business_activities", pa.list_(ACTIVITY)),
    pa.field("members", pa.list_(MEMBER)),  # variant A only
    pa.field("legal_representatives", pa.list_(REPRESENTATIVE)),
    pa.field("source_variant", pa.string(), nullable=False),  # A or B
    pa.field(VERSION_COLUMN, pa.date32(), nullable=False),
]

SCHEMA = with_provenance(FIELDS, DATASET, VERSION)
