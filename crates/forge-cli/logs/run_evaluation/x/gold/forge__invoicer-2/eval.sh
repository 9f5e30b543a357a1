#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 058bbed5218f142d9e8b1116b98b85ff17ca377f
restore() {
  for f in "$@"; do
    if git cat-file -e 058bbed5218f142d9e8b1116b98b85ff17ca377f:"$f" 2>/dev/null; then git checkout -q 058bbed5218f142d9e8b1116b98b85ff17ca377f -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_tax.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_tax.py b/tests/test_tax.py
index 76b499e..d042683 100644
--- a/tests/test_tax.py
+++ b/tests/test_tax.py
@@ -18,3 +18,14 @@ def test_with_rate_does_not_modify_original():
     t2 = t.with_rate("books", "0.07")
     assert "books" not in t.rates
     assert t2.rate_for("books") == Decimal("0.07")
+
+
+def test_zero_rate_category_is_tax_free():
+    t = TaxTable("0.20", {"exports": 0})
+    assert t.rate_for("exports") == Decimal("0")
+    assert t.tax_on(Money("100.00"), "exports") == Money("0")
+
+
+def test_with_rate_zero():
+    t = TaxTable("0.19").with_rate("medicine", "0.00")
+    assert t.tax_on(Money("50"), "medicine") == Money("0")
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_tax.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_tax.py'
exit $rc
