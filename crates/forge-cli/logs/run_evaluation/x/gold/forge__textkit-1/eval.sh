#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat cc769a8fb9bcd7e0009694aec8eccc581d8b6578
restore() {
  for f in "$@"; do
    if git cat-file -e cc769a8fb9bcd7e0009694aec8eccc581d8b6578:"$f" 2>/dev/null; then git checkout -q cc769a8fb9bcd7e0009694aec8eccc581d8b6578 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_slugify.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_slugify.py b/tests/test_slugify.py
index c685966..9e3095e 100644
--- a/tests/test_slugify.py
+++ b/tests/test_slugify.py
@@ -15,3 +15,12 @@ def test_leading_and_trailing_separators_removed():
 
 def test_max_length_cuts_at_word_boundary():
     assert slugify("the quick brown fox", max_length=12) == "the-quick"
+
+
+def test_runs_of_punctuation_become_one_separator():
+    assert slugify("Hello,  World!") == "hello-world"
+    assert slugify("a -- b") == "a-b"
+
+
+def test_custom_separator_is_not_repeated():
+    assert slugify("C++ & Rust: a comparison", sep="_") == "c_rust_a_comparison"
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_slugify.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_slugify.py'
exit $rc
