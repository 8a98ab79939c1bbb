import type Dockerode from 'dockerode';
import { ErrorCode, QwexError } from '../../errors.js';
import type { Job } from '../../run/model.js';
import { notStartedProcess, type Backend, type RunIO, type StartedProcess } from '../types.js';
import { containerName, containerSpec, startCreated } from './container.js';
import type { ContainerConfig } from '../../config/container.js';
import { connect, engineEndpoint, engineError, inspectQuietly, statusOf, type Engine, type EngineContainer } from './engine.js';
import { followContainer } from './follow.js';
import { missingImage, pullImage } from './image.js';

/**
 * Runs the command in a container on a Docker engine, through its HTTP API
 * (engine.ts; container.ts says what the container is). The engine is the daemon of
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
    const docker = await connect();
    const name = containerName(io.runId);
    if (config.pull === 'always') await pullImage(docker, config.image, io.signal, io.progress);
    io.signal.throwIfAborted();
    // Created here, or (a 409: the name is the run's) by a predecessor that died meanwhile: that one is the run's.
    const created = await this.create(docker, job, io, config);
    let container = created ?? docker.getContainer(name);
    let found: Dockerode.ContainerInspectInfo | 'created';
    if (created) {
      found = 'created';
    } else {
      const info = await this.find(docker, name);
      if (info === 'gone') throw new QwexError(ErrorCode.ContainerFailed, `the container ${name} was removed as soon as it was created`);
      found = info;
      container = docker.getContainer(info.Id);
    }
    const details = { container: name, containerId: container.id, image: config.image, engine: engineEndpoint() };
    if (found === 'created' || found.State.Status === 'created') {
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

  /**
   * Creates the run's container, pulling its image first when the engine
   * says it has none and the policy allows. Undefined when a container of
   * that name is there already.
   */
  private async create(docker: Engine, job: Job, io: RunIO, config: ContainerConfig): Promise<EngineContainer | undefined> {
    for (let pulled = false; ; pulled = true) {
      try {
        return await docker.createContainer(containerSpec(job, io, config));
      } catch (error) {
        const status = statusOf(error);
        if (status === 409) return undefined;
        if (status !== 404 || pulled) throw engineError(error, `cannot create the container for ${config.image}`, ErrorCode.ContainerFailed);
      }
      // 404: no such image.
      if (config.pull === 'never') throw missingImage(config);
      await pullImage(docker, config.image, io.signal, io.progress);
      io.signal.throwIfAborted();
    }
  }

  adopt(details: Record<string, unknown>, dir: string): StartedProcess {
    const name = typeof details.containerId === 'string' ? details.containerId : typeof details.container === 'string' ? details.container : undefined;
    if (name === undefined) {
      return notStartedProcess({ exitCode: null, signal: null, lost: 'its record names no container' });
    }
    let docker: Engine | undefined;
    const getContainer = async (): Promise<EngineContainer> => (docker ??= await connect()).getContainer(name);
    return followContainer(getContainer, details, dir);
  }

  /** The run's container as the engine has it, or 'gone' when it has none. */
  private async find(docker: Engine, name: string): Promise<Dockerode.ContainerInspectInfo | 'gone'> {
    const info = await inspectQuietly(docker.getContainer(name));
    if (info === undefined) throw new QwexError(ErrorCode.BackendUnavailable, `the Docker engine at ${engineEndpoint()} did not answer about the container ${name}`);
    return info;
  }
}
