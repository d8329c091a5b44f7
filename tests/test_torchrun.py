"""The runner under torchrun (2 processes, gloo on 127.0.0.1) against one process; a dead worker ends the job."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

from helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# τ = 1e-3: a float32 HIG step at τ = 1e-6 amplifies last-bit differences of the batch split by up to 1e6
ARGS = ['run', 'toy', '--preset', 'test', '--steps', '30', '--eval-every', '5', '--threads', '1', '--quiet',
        '--hp', 'hig.lr=0.3', '--hp', 'gn.lr=1', '--hp', 'hig.truncation=1e-3', '--hp', 'gn.truncation=1e-3']


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', PHI_HIG_COLLECTIVE_TIMEOUT='30')


def _torchrun(args, n=2):
    return [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={n}', '--master_addr=127.0.0.1',
            f'--master_port={free_port()}', '-m', 'phi_hig', *args]


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _run(cmd, timeout=120):
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def test_two_processes_reproduce_the_one_process_run(tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    rc, log = _run([sys.executable, '-m', 'phi_hig', *ARGS, '--out', str(one)])
    assert rc == 0, log
    rc, log = _run(_torchrun([*ARGS, '--out', str(two)]))
    assert rc == 0, log
    a, b = _rows(one / 'metrics.csv'), _rows(two / 'metrics.csv')
    assert [(r['method'], r['step']) for r in a] == [(r['method'], r['step']) for r in b]
    for r, s in zip(a, b):
        if r['test_loss']:
            assert abs(float(r['test_loss']) - float(s['test_loss'])) <= 1e-3 * abs(float(r['test_loss'])), (r, s)
    with open(two / 'summary.json') as f:
        assert json.load(f)['world_size'] == 2
    # stopped at step 15 and resumed with 2 processes: the same rows as the uninterrupted 2-process run
    half = [a for a in ARGS if a != '30'] + ['--out', str(tmp_path / 'half')]
    half[half.index('--steps') + 1:half.index('--steps') + 1] = ['15']
    for extra in (['--checkpoint-every', '5'], ['--resume', '--steps', '30']):
        rc, log = _run(_torchrun([*half, *extra]))
        assert rc == 0, log
    c = _rows(tmp_path / 'half' / 'metrics.csv')
    assert [{k: v for k, v in r.items() if k != 'wall_time'} for r in c] == \
        [{k: v for k, v in r.items() if k != 'wall_time'} for r in b]
    # a checkpoint of the 1-process run is refused by a 2-process resume, naming the world size
    hig = ['run', 'toy', '--preset', 'test', '--threads', '1', '--quiet', '--methods', 'hig', '--out',
           str(tmp_path / 'ck')]
    rc, log = _run([sys.executable, '-m', 'phi_hig', *hig, '--steps', '10', '--checkpoint-every', '5'])
    assert rc == 0, log
    rc, log = _run(_torchrun([*hig, '--steps', '20', '--resume']))
    assert rc != 0 and 'world_size' in log, log


def test_a_batch_not_divisible_by_the_processes_is_refused(tmp_path):
    rc, log = _run(_torchrun(['run', 'toy', '--preset', 'test', '--steps', '2', '--batch-size', '15', '--quiet']))
    assert rc != 0 and 'not divisible by the 2 processes' in log, log


def _children(pid):
    out = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def test_killing_one_worker_ends_the_job_with_a_non_zero_exit(tmp_path):
    proc = subprocess.Popen(_torchrun(['run', 'toy', '--preset', 'test', '--seconds', '600', '--threads', '1',
                                       '--methods', 'hig', '--quiet']), cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        workers = []
        while time.time() < deadline and len(workers) < 2:
            workers = [p for p in _children(proc.pid) if 'phi_hig' in open(f'/proc/{p}/cmdline').read()]
            time.sleep(0.5)
        assert len(workers) == 2, "torchrun did not start two workers"
        time.sleep(8)  # let them import and train
        os.kill(workers[1], signal.SIGKILL)
        t0 = time.time()
        log = proc.communicate(timeout=90)[0]
        assert time.time() - t0 < 60
        assert proc.returncode != 0, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in _children(proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
