#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 45d37033f259950b569c2a638c07471c4dd38afc
restore() {
  for f in "$@"; do
    if git cat-file -e 45d37033f259950b569c2a638c07471c4dd38afc:"$f" 2>/dev/null; then git checkout -q 45d37033f259950b569c2a638c07471c4dd38afc -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_invoice.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_invoice.py b/tests/test_invoice.py
index d9808fd..bde2c36 100644
--- a/tests/test_invoice.py
+++ b/tests/test_invoice.py
@@ -31,3 +31,10 @@ def test_line_quantity_positive():
 def test_currency_checked():
     with pytest.raises(ValueError):
         Invoice(table()).add(Line("x", Money("1", "USD")))
+
+
+def test_empty_invoice_totals_are_zero():
+    inv = Invoice(table(), currency="USD")
+    assert inv.subtotal() == Money("0", "USD")
+    assert inv.tax() == Money("0", "USD")
+    assert inv.total() == Money("0", "USD")
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_invoice.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_invoice.py'
exit $rc
