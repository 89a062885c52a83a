"""auditlog.ops.masked_template: the masking of secrets in a template's diff (pure logic)."""

from __future__ import annotations

from ansible_collections.auditlog.ops.plugins.plugin_utils.masking import (
    MASK,
    mask_diff,
    mask_text,
    secret_forms,
)


def test_a_secret_is_masked_as_it_is_and_url_encoded():
    secrets = secret_forms("p@ss/word+1")
    text = "requirepass p@ss/word+1\nDATABASE_URL=postgresql://u:p%40ss%2Fword%2B1@db:5432/x\n"
    assert mask_text(text, secrets) == f"requirepass {MASK}\nDATABASE_URL=postgresql://u:{MASK}@db:5432/x\n"


def test_a_longer_secret_that_contains_a_shorter_one_is_masked_whole():
    secrets = secret_forms("abcd") | secret_forms("abcdefgh")
    assert mask_text("x=abcdefgh y=abcd", secrets) == f"x={MASK} y={MASK}"


def test_mask_diff_masks_before_and_after_of_every_entry_and_keeps_the_rest():
    diff = [
        {"before": "pw=secret1", "after": "pw=secret2", "before_header": "/etc/x"},
        {"before": "", "after": "other"},
    ]
    masked = mask_diff(diff, secret_forms("secret1") | secret_forms("secret2"))
    assert masked == [
        {"before": f"pw={MASK}", "after": f"pw={MASK}", "before_header": "/etc/x"},
        {"before": "", "after": "other"},
    ]


def test_text_without_secrets_is_unchanged():
    assert mask_text("maxmemory 256mb", secret_forms("s3cr3t-value")) == "maxmemory 256mb"
    assert mask_text(None, secret_forms("s3cr3t-value")) is None
