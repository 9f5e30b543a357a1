#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 9b2ce859994713f2f594599d4576eb5b3ada090e
restore() {
  for f in "$@"; do
    if git cat-file -e 9b2ce859994713f2f594599d4576eb5b3ada090e:"$f" 2>/dev/null; then git checkout -q 9b2ce859994713f2f594599d4576eb5b3ada090e -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_case.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_case.py b/tests/test_case.py
index 921b57d..3ba2601 100644
--- a/tests/test_case.py
+++ b/tests/test_case.py
@@ -13,3 +13,12 @@ def test_snake_to_camel():
 
 def test_snake_to_camel_keeps_leading_underscores():
     assert snake_to_camel("_private_name") == "_privateName"
+
+
+def test_camel_to_snake_keeps_acronyms_together():
+    assert camel_to_snake("HTTPResponseCode") == "http_response_code"
+    assert camel_to_snake("parseXMLFile") == "parse_xml_file"
+
+
+def test_camel_to_snake_digits():
+    assert camel_to_snake("utf8Encoder") == "utf8_encoder"
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_case.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_case.py'
exit $rc
