// Fault injection for crash tests: FERRY_FAULT="point:N" kills this process with SIGKILL the
// N-th time execution passes fault_point("point"). Costs one relaxed atomic load when unset.
#pragma once

namespace ferry {

void fault_point(const char* point);

}  // namespace ferry
