import type { BlobStore } from './blob-store.js';
import type { ClusterMonitor } from './clusters.js';
import type { Db } from './db/connect.js';
import type { ServerNotifications } from './notify.js';
import type { ChangeFeed } from './change-feed.js';
import type { Limits } from './config.js';
import type { LogWatchers } from './log-tail.js';
import type { RunService } from './run-service.js';
import type { ApiServices } from './runs-source.js';
import type { SseStreams } from './sse.js';
import type { TokenStore } from './tokens.js';

/** What the route plugins are given (as plugin options: nothing is decorated onto the server): the run API's services, and qwexcloud's own. */
export interface Services extends ApiServices {
  runs: RunService;
  blobs: BlobStore;
  tokens: TokenStore;
  streams: SseStreams;
  watchers: LogWatchers;
  feed: ChangeFeed;
  limits: Limits;
  /** Cluster health and notifications (absent in an app built without them). */
  clusters?: { monitor: ClusterMonitor; database: Db };
  notifications?: ServerNotifications;
}
