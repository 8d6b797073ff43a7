// Fault injection for crash and robustness tests. FERRY_FAULT="point:N" kills this process with SIGKILL the N-th time
// execution passes fault_point("point"); FERRY_FAULT_THROW="point:N" throws an exception that is not a ferry::Error
// (a bug's shape: std::logic_error) there instead, once; FERRY_FAULT_DELAY="point:MS" sleeps MS milliseconds at every
// pass (tests widen a window with it). Costs one relaxed atomic load when unset.
#pragma once

namespace ferry {

void fault_point(const char* point);

}  // namespace ferry
