import type Dockerode from 'dockerode';
import { ErrorCode, QwexError } from '../../errors.js';
import type { Job } from '../../run/model.js';
import { untilAborted } from '../abort.js';
import { notStartedProcess, type Backend, type RunIO, type StartedProcess } from '../types.js';
import { containerName, containerSpec, startCreated } from './container.js';
import { connect, engineEndpoint, engineError, inspectQuietly, statusOf } from './engine.js';
import { followContainer } from './follow.js';
import { ensureImage } from './image.js';

/**
 * Runs the command in a container on a Docker engine, with dockerode
 * (container.ts says what the container is). The engine is the daemon of
 * record: the container keeps running if qwex goes away, and `adopt` finds
 * it again by its name (`qwex-<run id>`), as does a second `start` of the
 * same run: a container already there is that run's, adopted, never a
 * second one. Its output is copied from the engine into stdout.log and
 * stderr.log by whoever supervises the run (follow.ts). The container is
 * removed only after the run's record is final (`release`).
 */
export class DockerBackend implements Backend {
  readonly name = 'docker';

  async start(job: Job, io: RunIO): Promise<StartedProcess> {
    const config = job.container;
    if (!config) throw new QwexError(ErrorCode.Internal, 'a docker run was recorded without its container settings');
    const docker = await untilAborted(connect(), io.signal);
    const name = containerName(io.runId);
    let found = await this.find(docker, name);
    let container = docker.getContainer(name);
    if (found === 'gone') {
      await ensureImage(docker, config, io.signal, io.progress);
      io.signal.throwIfAborted();
      try {
        container = await docker.createContainer(containerSpec(job, io, config));
      } catch (error) {
        // 409: a predecessor that died created it meanwhile (its name is the run's): that one is the run's.
        if (statusOf(error) !== 409) throw engineError(error, `cannot create the container for ${config.image}`, ErrorCode.ContainerFailed);
      }
      found = await this.find(docker, name);
      if (found === 'gone') throw new QwexError(ErrorCode.ContainerFailed, `the container ${name} was removed as soon as it was created`);
    }
    const details = { container: name, containerId: found.Id, image: config.image, engine: engineEndpoint() };
    if (found.State.Status === 'created') {
      // Created but never started (by this start, or by one that died before starting it): the command has not run.
      if (io.signal.aborted) {
        await container.remove({ force: true }).catch(() => {
          // the engine went away: `qwex doctor` lists what is left
        });
        io.signal.throwIfAborted();
      }
      const failed = await startCreated(container, job, config);
      if (failed) return failed;
    }
    return followContainer(() => Promise.resolve(container), details, io.dir);
  }

  adopt(details: Record<string, unknown>, dir: string): StartedProcess {
    const name = typeof details.containerId === 'string' ? details.containerId : typeof details.container === 'string' ? details.container : undefined;
    if (name === undefined) {
      return notStartedProcess({ exitCode: null, signal: null, lost: 'its record names no container' });
    }
    let docker: Dockerode | undefined;
    const getContainer = async (): Promise<Dockerode.Container> => (docker ??= await connect()).getContainer(name);
    return followContainer(getContainer, details, dir);
  }

  /** The run's container as the engine has it, or 'gone' when it has none. */
  private async find(docker: Dockerode, name: string): Promise<Dockerode.ContainerInspectInfo | 'gone'> {
    const info = await inspectQuietly(docker.getContainer(name));
    if (info === undefined) throw new QwexError(ErrorCode.BackendUnavailable, `the Docker engine at ${engineEndpoint()} did not answer about the container ${name}`);
    return info;
  }
}
