#!/bin/bash
set -uo pipefail
cd /testbed
git -c core.fileMode=false diff --stat 688843ea728a846fa356abde5b28d2ce5eb720de
restore() {
  for f in "$@"; do
    if git cat-file -e 688843ea728a846fa356abde5b28d2ce5eb720de:"$f" 2>/dev/null; then git checkout -q 688843ea728a846fa356abde5b28d2ce5eb720de -- "$f"; else rm -rf -- "$f"; fi
  done
}
restore 'tests/test_lexer.py'
find . -name '__pycache__' -type d -prune -exec rm -rf {} + 2>/dev/null
git apply --verbose - <<'EOF_114329324912' || { echo '>>>>> Tests Errored'; exit 1; }
diff --git a/tests/test_lexer.py b/tests/test_lexer.py
index b387f6d..d4e9a68 100644
--- a/tests/test_lexer.py
+++ b/tests/test_lexer.py
@@ -35,3 +35,8 @@ def test_errors_carry_line_numbers():
         parse_lines('A="unterminated')
     with pytest.raises(EnvSyntaxError):
         parse_lines("1BAD=x")
+
+
+def test_hash_inside_quotes_is_not_a_comment():
+    assert values('PASSWORD="abc #123"  # the db password') == {"PASSWORD": "abc #123"}
+    assert values("SECRET='x # y'") == {"SECRET": "x # y"}
EOF_114329324912
: '>>>>> Start Test Output'
echo '>>>>> Start Test Output'
PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python3 -c 'import os, sys, pytest; rc = pytest.main(sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(int(rc))' -rA -p no:cacheprovider 'tests/test_lexer.py'
rc=$?
echo '>>>>> End Test Output'
restore 'tests/test_lexer.py'
exit $rc
