#!/usr/bin/env bash
# Post the sample exam and one submission to a running gradeflow (make run), then show the result.
#
# Talks to http://${GRADEFLOW_API_HOST:-127.0.0.1}:${GRADEFLOW_API_PORT:-8000} (the same settings
# `gradeflow dev` binds to) unless API is set; WAIT_SECONDS (default 10) bounds the wait for the grade.
set -euo pipefail
API=${API:-http://${GRADEFLOW_API_HOST:-127.0.0.1}:${GRADEFLOW_API_PORT:-8000}}
here="$(cd "$(dirname "$0")" && pwd)"
gradeflow="$here/../.venv/bin/gradeflow"
wait_seconds=${WAIT_SECONDS:-10}

if ! curl -sf -o /dev/null --max-time 5 "$API/v1/health"; then
  echo "examples/submission.sh: no gradeflow API answers at $API." >&2
  echo "  Start it in another terminal with 'make run' (it prints the API address when everything is ready)," >&2
  echo "  or point this script at yours: GRADEFLOW_API_PORT=8010 $0 (or API=http://host:port $0)." >&2
  exit 1
fi
if [ -z "${TOKEN:-}" ] && [ ! -x "$gradeflow" ]; then
  echo "examples/submission.sh: $gradeflow is missing; run 'make run' once (it creates .venv), or set TOKEN." >&2
  exit 1
fi
TOKEN=${TOKEN:-$("$gradeflow" token --tenant demo-school --role admin)}
auth=(-H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json")
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

exam_id=$(curl -sf "${auth[@]}" -d @"$here/exam.json" "$API/v1/exams" | field id)
echo "exam: $exam_id"
body=$(cat <<JSON
{"exam_id": "$exam_id", "student_id": "student-42", "answers": {
  "q1": "mitochondrion", "q2": ["adenine", "guanine"], "q3": 9.8,
  "q4": "It makes sugar and releases oxygen.",
  "q5": "Individuals differ (variation); traits are inherited, and those that survive reproduce more."}}
JSON
)
reply=$(curl -sf "${auth[@]}" -H "Idempotency-Key: demo-$exam_id" -d "$body" "$API/v1/submissions")
echo "submitted: $reply"
sid=$(echo "$reply" | field submission_id)
deadline=$((SECONDS + wait_seconds))
while [ "$SECONDS" -lt "$deadline" ]; do
  status=$(curl -sf "${auth[@]}" "$API/v1/submissions/$sid" | field status)
  [ "$status" = queued ] || [ "$status" = grading ] || break
  sleep 0.2
done
curl -sf "${auth[@]}" "$API/v1/submissions/$sid" | python3 -m json.tool
echo "live feed: .venv/bin/python -m websockets \"${API/http/ws}/v1/ws/submissions/$sid?token=\$TOKEN\""
