#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 2f537d2873f4cb4c3950e8ae2209ad7587f5be74
restore() {
  for f in "$@"; do
    if git cat-file -e 2f537d2873f4cb4c3950e8ae2209ad7587f5be74:"$f" 2>/dev/null; then git checkout -q 2f537d2873f4cb4c3950e8ae2209ad7587f5be74 -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_version.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_version.py b/tests/test_version.py
index 68c4663..b41c903 100644
--- a/tests/test_version.py
+++ b/tests/test_version.py
@@ -29,3 +29,15 @@ def test_prerelease_sorts_before_release():
 def test_build_metadata_is_ignored_for_precedence():
     assert Version.parse("1.0.0+a") == Version.parse("1.0.0+b")
     assert len({Version.parse("1.0.0+a"), Version.parse("1.0.0")}) == 1
+
+
+def test_semver_spec_precedence_example():
+    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
+             "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]
+    versions = [Version.parse(v) for v in chain]
+    assert sorted(reversed(versions)) == versions
+
+
+def test_numeric_prerelease_identifiers_compare_as_numbers():
+    assert Version.parse("1.0.0-rc.2") < Version.parse("1.0.0-rc.10")
+    assert Version.parse("1.0.0-2") < Version.parse("1.0.0-10")
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_version.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_version.py'
exit $rc
