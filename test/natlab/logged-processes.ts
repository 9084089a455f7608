import type { ChildProcess } from 'node:child_process';

/**
 * Processes a lab test starts, each with its output kept under a name (what the test waits
 * for and what it prints when it fails), ended by PID after each attempt so a retry never
 * meets the last attempt's ports in use.
 */
export class LoggedProcesses {
  readonly logs = new Map<string, string>();
  readonly #spawn: (ns: string, argv: string[]) => ChildProcess;
  #children: ChildProcess[] = [];

  /** `spawn`: how a process is started in a namespace (called at `start`, not before). */
  constructor(spawn: (ns: string, argv: string[]) => ChildProcess) {
    this.#spawn = spawn;
  }

  start(name: string, ns: string, argv: string[]): ChildProcess {
    const child = this.#spawn(ns, argv);
    this.#children.push(child);
    this.logs.set(name, '');
    const append = (b: Buffer) => this.logs.set(name, (this.logs.get(name) ?? '') + b.toString());
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    return child;
  }

  /** SIGKILL to every process started since the last call that has not exited. */
  killAll(): void {
    for (const c of this.#children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  }
}
