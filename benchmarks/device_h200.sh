#!/usr/bin/env bash
# What the device calls of issue 12/15 run on the lent GPU machine (no network there).
#
#   bash benchmarks/device_h200.sh profile  DEADLINE_S   # profile the H200 (resumes from the checkpoint)
#   bash benchmarks/device_h200.sh co-runs  DEADLINE_S   # + the kernel-delay form's co-location design (co_runs.jsonl)
#   bash benchmarks/device_h200.sh serving               # the serving stack, into profiles/h200/serving.json
#   bash benchmarks/device_h200.sh serving-all           # the same, every model at two batches
#   [LOADGEN=python] bash benchmarks/device_h200.sh live DEADLINE_S PLAN...  # apply plans for 60 s each
#   bash benchmarks/device_h200.sh accuracy DEADLINE_S [SEED FILE]  # co-located mixes (resumes from the repo's file)
#
# Needs, carried with the working tree (build it with benchmarks/make_carry.sh): .carry/site.tar.xz, the nvidia-pytriton 0.7.0, tritonclient
# 2.51.0 and python-rapidjson wheels unpacked (the Python 3.13 libpython, other stubs and
# perf_client dropped) and Debian's libb64-0d (perf_analyzer needs it). Results go to $OUT.
set -uo pipefail
stage=$1; shift
here=$(pwd)
carry=/tmp/carry
if [ ! -d $carry/site ]; then
  mkdir -p $carry && tar -xJf .carry/site.tar.xz -C $carry || exit 3
fi
export PYTHONPATH=$carry/site
export PATH=$carry/site/tritonclient-2.51.0.data/data/bin:$PATH
export LD_LIBRARY_PATH=$carry/deb/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1 IGNITER_OPT_NCU_IN_MPS=0 IGNITER_OPT_CACHE=/tmp/igniter-cache
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/tmp/pip.log 2>&1 || { tail -5 /tmp/pip.log; exit 4; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/gpu.txt
prof=profiles/h200
case $stage in
  profile)
    deadline=$1
    timeout -s TERM "$deadline" igniter-opt profile --models all --gpu 0 -o $prof \
      --batches 1,2,4,8,16,32 --shares 10,25,50,100 --no-progress 2>&1 | tail -40
    echo "profile exit ${PIPESTATUS[0]}"
    ;;
  co-runs)  # the solo plan is in the checkpoint already: only the co-location design runs
    deadline=$1
    timeout -s TERM "$deadline" igniter-opt profile --models all --gpu 0 -o $prof \
      --batches 1,2,4,8,16,32 --shares 10,25,50,100 --interference-form kernel-delay --no-progress 2>&1 | tail -40
    echo "profile exit ${PIPESTATUS[0]}"
    ;;
  serving|serving-all)  # serving-all: every model at two batches (their own overheads), about 4 x 35 s
    igniter-opt profile --serving $([ $stage = serving-all ] && echo --serving-models all) -o $prof 2>&1 | tail -30
    # One run (serving) or one folder per run (serving-all): keep the summaries, deployments and logs.
    (cd $prof && find serving-run \( -name summary.json -o -name deployment.json -o -path '*/logs/*' \) -print0 |
      tar -czf $OUT/serving_run.tgz --null -T -)
    ;;
  live)
    deadline=$1; shift
    gen=${LOADGEN:-perf_analyzer}; res=$OUT/res_$gen
    timeout -s TERM "$deadline" python3 benchmarks/live_tail.py run "$@" --duration 60 \
      --load-generator $gen --max-lag-ms 2 -o $res > $OUT/live_$gen.log 2>&1
    echo "live exit $?"; grep -v "^  " $OUT/live_$gen.log | tail -40
    tar -czf $OUT/live_runs_$gen.tgz -C $res live_tail_runs 2>/dev/null && rm -rf $res/live_tail_runs
    ;;
  accuracy)
    deadline=$1; seed=${2:-7}; name=${3:-accuracy_h200_runs.jsonl}
    [ -f benchmarks/results/$name ] && cp benchmarks/results/$name $OUT/
    python3 benchmarks/accuracy.py run -o $OUT/$name --mixes 48 --seed $seed \
      --deadline-s "$deadline" --log-dir /tmp/accuracy-logs 2>&1 | tail -60
    echo "accuracy exit ${PIPESTATUS[0]}"
    ;;
esac
# Only the stages that write the profile bring it back (the device tool returns a limited number of files).
case $stage in profile|co-runs|serving|serving-all)
  for f in raw.json coefficients.json checkpoint.jsonl serving.json co_runs.jsonl; do
    [ -f $prof/$f ] && cp $prof/$f $OUT/ 2>/dev/null
  done;;
esac
exit 0
